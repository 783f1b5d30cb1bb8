from yun.cli import main

main()
