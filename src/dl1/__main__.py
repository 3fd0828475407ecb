from dl1.cli import main

raise SystemExit(main())
