from hwnas_deploy.cli import main

main()
