from pbw.reproduce.cli import main

main()
