"""pytest options for the exercises: ``--impl=starter`` checks your files, ``reference`` (default) the solutions."""


def pytest_addoption(parser):
    parser.addoption(
        "--impl", choices=("reference", "starter"), default="reference",
        help="which implementations the exercise checks run on: the reference solutions (default) or your starter files",
    )
