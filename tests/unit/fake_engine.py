"""A fake of claude_bottle.docker.Engine with the same methods, over in-memory objects.

Unit tests use it in place of the real engine (our own boundary), to check what the core creates, with
which labels, and that it removes all of it. test_fake_engine checks that its methods and their
signatures are exactly the real Engine's, so the two cannot drift; `fail_on` makes a method fail the way
the engine does (DockerUnavailable, the one error the real Engine lets out)."""

from __future__ import annotations

import io
import tarfile

from claude_bottle.docker import ContainerSpec, ContainerState, Found
from claude_bottle.errors import DockerUnavailable, EngineLost


# What the engine says while it builds: steps, and the packages' chatter between them.
BUILD_OUTPUT = ["Step 1/2 : FROM debian:bookworm-slim\n", " ---> 5f1a0e2b\n",
                "Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]\n",
                "Step 2/2 : RUN npm install -g @anthropic-ai/claude-code\n",
                "npm warn EBADENGINE Unsupported engine { node: '>=22' }\n", "Successfully built 5f1a0e2b\n"]


class FakeEngine:
    host = "unix:///fake.sock"
    kind = "docker"

    def __init__(self, images=(), fail_on=None, interactive=0, headless=(0, b"")):
        self.images = set(images)
        self.pushed: set[str] = set()
        self.networks: set[str] = set()
        self.objects: dict[tuple[str, str], Found] = {}
        self.specs: dict[str, ContainerSpec] = {}
        self.calls: list[tuple] = []
        self.stdin: dict[str, list[bytes]] = {}
        self.archives: dict[str, bytes] = {}
        self.fail_on = fail_on  # (method, name) -> fail there as the engine would
        self.interactive = interactive  # exit code, exception, or callable run at exec_interactive
        self.headless = headless  # (exit code, output) of exec_stream, or a callable(argv) giving them
        self.exec_results: dict[str, tuple[int, bytes]] = {}  # by the first word of a command
        self.missing_paths: set[tuple[str, str]] = set()  # (container, path) that path_exists does not find
        self.sidecar_says = "ready"  # the first line the sidecar's gate writes
        self.bottle_says = "ready"  # and bottle-init
        self.away = 0  # the engine is gone (restarting) for this many more calls of `container` or `answers`

    def _record(self, method, name, *extra):
        self.calls.append((method, name, *extra))
        if self.fail_on == (method, name):
            raise DockerUnavailable(f"the Docker engine at {self.host} refused: injected failure in {method} {name}")

    def clone(self):
        return self

    def answers(self):
        self.calls.append(("answers", None))
        if self.away:
            self.away -= 1
            return False
        return True


    # images
    def image_exists(self, ref):
        return ref in self.images

    def build_image(self, context, tag, buildargs, labels, nocache=False):
        self._record("build_image", tag)
        self.images.add(tag)
        yield from BUILD_OUTPUT

    def push_image(self, tag, ref):
        self._record("push_image", tag, ref)
        if tag not in self.images:
            raise DockerUnavailable(f"no such image: {tag}")
        self.pushed.add(ref)
        yield f"{ref}: pushed\n"

    def repo_digest(self, ref):
        return "sha256:" + "ab" * 32 if ref in self.pushed else None

    def pull_image(self, ref):
        self._record("pull_image", ref)
        raise DockerUnavailable("no registry in unit tests")

    def remove_image(self, ref):
        self._record("remove_image", ref)
        self.images.discard(ref)

    # networks and volumes
    def describe(self):
        return "25.0.0", "/var/lib/docker"

    def host_address(self):
        return "172.17.0.1"

    def ensure_network(self, name, labels):
        self.networks.add(name)

    def network_exists(self, name):
        return name in self.networks

    def remove_network(self, name):
        self.calls.append(("remove_network", name))
        self.objects.pop(("network", name), None)

    def create_volume(self, name, labels, tmpfs_options=None):
        self._record("create_volume", name, tmpfs_options)
        self.objects[("volume", name)] = Found("volume", name, dict(labels))

    def remove_volume(self, name):
        self.calls.append(("remove_volume", name))
        self.objects.pop(("volume", name), None)

    # containers
    def create_container(self, spec: ContainerSpec):
        self._record("create_container", spec.name)
        self.specs[spec.name] = spec
        self.objects[("container", spec.name)] = Found("container", spec.name, dict(spec.labels), "created", 1)

    def start_container(self, name):
        self._record("start_container", name)
        old = self.objects[("container", name)]
        self.objects[("container", name)] = Found("container", name, old.labels, "running", old.created)

    def start_with_input(self, name, data, timeout):
        self.start_container(name)
        self.stdin.setdefault(name, []).append(data)
        return self.sidecar_says if name.endswith("-sidecar") else self.bottle_says
    def remove_container(self, name, wait=60.0):
        self.calls.append(("remove_container", name))
        self.objects.pop(("container", name), None)

    def container(self, name):
        if self.away:
            self.away -= 1
            raise EngineLost(f"lost the connection to the Docker engine at {self.host}: [Errno 2] No such file")
        found = self.objects.get(("container", name))
        if not found:
            return None
        return ContainerState(name, found.state == "running", found.state, None, False, found.labels)

    def put_archive(self, name, path, tar):
        self._record("put_archive", name)
        self.archives[name] = tar if isinstance(tar, bytes) else tar.read()

    def exec(self, name, argv, user=None, stdin=None, workdir=None, timeout=None):
        self._record("exec", name, tuple(argv))
        if stdin is not None:
            self.stdin.setdefault(name, []).append(stdin)
        return self.exec_results.get(argv[0], (0, b""))

    def path_exists(self, name, path):
        self._record("path_exists", name, path)
        return (name, path) not in self.missing_paths

    def exec_to(self, name, argv, sink, user=None, workdir=None, timeout=None, limit=None):
        self._record("exec_to", name, tuple(argv))
        code, out = self.exec_results.get(argv[0], (0, b""))
        sink.write(out)
        return code, b""

    def exec_stream(self, name, argv, user, workdir, sink):
        self._record("exec_stream", name, tuple(argv))
        code, out = self.headless(argv) if callable(self.headless) else self.headless
        sink.write(out)
        return code

    def get_archive_to(self, name, path, sink, limit=None):
        self._record("get_archive_to", name, path)

    def exec_interactive(self, name, argv, user, workdir, tty, stdin):
        self._record("exec_interactive", name, tuple(argv))
        if callable(self.interactive):
            return self.interactive()
        if isinstance(self.interactive, BaseException):
            raise self.interactive
        return self.interactive

    def logs(self, name, follow=False, tail=None, since=None):
        yield b""

    def find(self, labels):
        def match(o):
            return all(k in o.labels and (not v or o.labels[k] == v) for k, v in labels.items())

        return [o for o in self.objects.values() if match(o)]


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def restart(engine: FakeEngine, away: int) -> None:
    """The engine restarts: gone for `away` calls, and every container of it stopped, as a restart does."""
    engine.away = away
    for key, found in list(engine.objects.items()):
        if key[0] == "container":
            engine.objects[key] = Found("container", found.name, found.labels, "exited", found.created)
