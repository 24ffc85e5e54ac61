from picket.cli import main

raise SystemExit(main())
