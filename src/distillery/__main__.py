from distillery.cli import main

main()
