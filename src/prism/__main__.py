from prism.cli.main import main

main()
