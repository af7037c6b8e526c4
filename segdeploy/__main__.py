from segdeploy.cli import main

main()
