from segtrain.cli import main

main()
