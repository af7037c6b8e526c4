"""`segdeploy batch` and `segdeploy merge-summary` (torch-free), a module per stage of a run and per file it writes."""
