"""The suites bundled with normbench (installed as package data of normbench.suites)."""
