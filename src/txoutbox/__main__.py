from txoutbox.cli.main import main

main()
