"""The errors claude-bottle reports to its user, and the exit code each one ends with.

Every message reads on its own and says what to do next; the CLI prints it as
`Error: <message>` and exits with the error's code.
"""


class BottleError(Exception):
    """Something the user can fix; the message says what and how."""

    exit_code = 1


class ManifestError(BottleError):
    """A manifest (or an option standing in for one) is malformed or refers to something missing."""

    exit_code = 3

    def __init__(self, message: str, file: object = None, field: str | None = None):
        self.file = file
        self.field = field
        where = ": ".join(str(part) for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class DockerUnavailable(BottleError):
    """The Docker engine cannot be reached."""

    exit_code = 4


class EngineLost(DockerUnavailable):
    """The engine stopped answering part-way (it may be restarting): what it held is still there when it is back."""


class ClusterUnavailable(DockerUnavailable):
    """The Kubernetes cluster cannot be reached, or refused (the runtime's engine, like Docker's)."""


class ImageBuildError(BottleError):
    """The bottle image failed to build."""

    exit_code = 5


class Refused(BottleError):
    """The user declined, or a run that needs an answer had nobody to ask."""

    exit_code = 6
