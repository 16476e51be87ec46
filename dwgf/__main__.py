from dwgf.cli import main

main()
