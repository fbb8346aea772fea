"""What the tests share, imported as `tests.support.<module>`: where the test models are
(`paths`), replicas started on a real local runtime (`replicas`), a real `ember serve`
(`server`) and the API tests' clients of it (`api`), a loopback webhook receiver
(`webhooks`) and /proc checks of the processes a server leaves (`processes`)."""
