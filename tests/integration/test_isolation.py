"""From inside a real bottle container: the proxy port the sidecar holds is the only way out, and secrets
stay off disk.

The sidecar here is a plain listener on the shared egress network, standing where
the gate and pipelock run (test_sidecar attacks the real ones); what is under
test is the bottle container and the path to its sidecar, which are the
product's own (support.TestBottle builds them with the product's specs).
"""

import contextlib
import http.server
import ipaddress
import json
import secrets
import subprocess

from claude_bottle import bottle, cleanup, egress

from . import support



class HostService(support.Server):
    """An HTTP server on the Docker host, listening on all interfaces, as a user's dev server would."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"host-service-reached"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def host_addresses() -> set[str]:
    """Every IPv4 address of the Docker host: its interfaces (docker0 and bridges included)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    addrs = {line.split()[3].split("/")[0] for line in out.splitlines()}
    return {a for a in addrs if not ipaddress.ip_address(a).is_loopback}


class IsolationTest(support.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.host = HostService()
        cls.a = support.TestBottle()
        cls.b = support.TestBottle()
        # Control: an --internal network container DOES reach the host service. If this ever
        # stops holding, the probes below would pass for the wrong reason.
        cls.internal = support.sdk().networks.create(f"cb-test-internal-{support.RUN_ID}", internal=True,
                                                     labels=support.labels())

    @classmethod
    def tearDownClass(cls):
        cls.a.remove()
        cls.b.remove()
        cls.internal.remove()
        cls.host.close()
        super().tearDownClass()

    def curl_direct(self, url: str) -> tuple[int, str]:
        return self.a.sh(f"curl -sS -m 3 --noproxy '*' {url}")

    def test_the_proxy_port_leads_to_the_sidecar(self):
        code, out = self.a.sh("curl -sS -m 5 http://anything.example/")
        self.assertEqual((code, out.strip()), (0, support.LISTENER_REPLY))

    def test_only_loopback_exists(self):
        code, out = self.a.sh("ls /sys/class/net; cat /proc/net/route | wc -l; cat /proc/net/if_inet6")
        self.assertEqual(code, 0, out)
        lines = out.split()
        self.assertEqual(lines[0], "lo")
        self.assertEqual(lines[1], "1")  # the routing table's header and no route
        self.assertTrue(all(not line.strip() or line.endswith("lo") for line in out.splitlines()[2:]), out)

    def test_host_service_reachable_from_plain_internal_network(self):
        gateway = support.host_address()
        code, out = support.run(support.bottle_image(), ["curl", "-sS", "-m", "5",
                                                         f"http://{gateway}:{self.host.port}/"],
                                network=self.internal.name)
        self.assertEqual((code, out), (0, "host-service-reached"))

    def test_host_address_is_the_bridge_gateway_even_on_a_fresh_engine(self):
        bridge = support.sdk().networks.get("bridge").attrs["Options"].get("com.docker.network.bridge.name", "docker0")
        out = subprocess.run(["ip", "-o", "-4", "addr", "show", bridge], capture_output=True, text=True, check=True)
        self.assertEqual(support.engine().host_address(), out.stdout.split()[3].split("/")[0])

    def test_docker_host_unreachable_at_every_address(self):
        bottle.ensure_network(support.engine())  # ours, even where sidecars go on the default bridge
        egress_gateway = support.sdk().networks.get(bottle.EGRESS_NETWORK).attrs["IPAM"]["Config"][0]["Gateway"]
        addresses = host_addresses() | {egress_gateway, support.engine().host_address(), "172.17.0.1"}
        for addr in sorted(addresses):
            with self.subTest(addr):
                code, out = self.curl_direct(f"http://{addr}:{self.host.port}/")
                self.assertNotEqual(code, 0)
                self.assertNotIn("host-service-reached", out)

    def test_outside_ip_unreachable(self):
        for url in ("https://203.0.113.80/", "http://1.1.1.1/"):
            with self.subTest(url):
                code, out = self.curl_direct(url)
                self.assertNotEqual(code, 0)
                self.assertIn("Couldn't connect", out)

    def test_metadata_and_ipv6_unreachable(self):
        for url in ("http://169.254.169.254/latest/meta-data/", "-g http://[2606:4700:4700::1111]/",
                    "-g http://[fd00::1]/"):
            with self.subTest(url):
                code, out = self.curl_direct(url)
                self.assertNotEqual(code, 0, out)

    def test_dns_resolution_fails(self):
        code, out = self.a.sh("getent hosts registry.npmjs.org; getent hosts github.com")
        self.assertNotEqual(code, 0)
        self.assertEqual(out.strip(), "")

    def test_other_bottle_and_its_sidecar_unreachable(self):
        n = self.b.plan.names
        sidecar_ip = self.b.ip_of(n.sidecar, bottle.sidecar_network(support.engine()))
        code, out = self.curl_direct(f"http://{sidecar_ip}:{support.STANDIN_PORT}/")
        self.assertNotEqual(code, 0)
        self.assertNotIn(support.LISTENER_REPLY, out)
        code, out = self.a.sh(f"ls {bottle.PROXY_DIR}")
        self.assertEqual(out.split(), [support.STANDIN_MARK + self.a.plan.names.sidecar])  # its own sidecar's only

    def test_bottle_container_is_hardened(self):
        info = support.sdk().api.inspect_container(self.a.plan.names.container)
        hc = info["HostConfig"]
        self.assertEqual(hc["NetworkMode"], "none")
        self.assertEqual(hc["CapDrop"], ["ALL"])
        self.assertEqual(hc["SecurityOpt"], ["no-new-privileges"])
        self.assertFalse(hc["Init"])  # its own init, below, which the agent cannot attach to
        self.assertEqual(self.a.sh("cat /proc/1/cmdline | tr '\\0' ' '")[1].split()[:4], list(bottle.INIT))
        self.assertEqual(hc["Memory"], 4 * 1024**3)
        self.assertEqual(hc["PidsLimit"], bottle.DEFAULT_PIDS)
        self.assertEqual(info["Config"]["User"], "1000:1000")
        code, out = self.a.sh("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
                              f"touch {bottle.PROXY_DIR}/x 2>&1")
        self.assertIn("CapEff:\t0000000000000000", out)
        self.assertIn("NoNewPrivs:\t1", out)
        self.assertIn("Read-only file system", out)


class SecretsTest(support.IntegrationTest):
    """The token and env values reach the bottle's processes but no command line, inspect or Docker's disk."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.token = "sk-ant-oat01-" + secrets.token_urlsafe(40)
        cls.value = "env-" + secrets.token_hex(16)
        cls.b = support.TestBottle(secrets={bottle.CLAUDE_TOKEN_VARIABLE: cls.token, "DB_PASSWORD": cls.value,
                                            "QUOTED": "it's $HOME `x`\nline2"})
        # A long-running process holding the secrets, so the scans below see a live bottle.
        cls.sleeper = subprocess.Popen(["docker", "exec", cls.b.plan.names.container, "bottle-exec", "sleep", "30"])

    @classmethod
    def tearDownClass(cls):
        cls.sleeper.kill()
        cls.sleeper.wait()
        cls.b.remove()
        super().tearDownClass()

    def test_values_arrive_in_the_bottle(self):
        code, out = self.b.sh('printf "%s|%s|%s" "$CLAUDE_CODE_OAUTH_TOKEN" "$DB_PASSWORD" "$QUOTED"')
        self.assertEqual((code, out), (0, f"{self.token}|{self.value}|it's $HOME `x`\nline2"))

    def test_secrets_file_is_private_to_the_bottle_user(self):
        code, out = self.b.sh(f"stat -c '%U %a' {bottle.SECRETS_DIR}/env {bottle.SECRETS_DIR}; "
                              f"grep {bottle.SECRETS_DIR} /proc/mounts")
        lines = out.splitlines()
        self.assertEqual(lines[:2], ["claude 600", "claude 700"])
        self.assertTrue(lines[2].split()[2] == "tmpfs", out)

    def test_not_in_docker_inspect(self):
        for found in cleanup.of_bottle(support.engine(), self.b.name):
            if found.kind == "container":
                dump = json.dumps(support.sdk().api.inspect_container(found.name))
                self.assertNotIn(self.token, dump)
                self.assertNotIn(self.value, dump)

    def test_not_on_any_command_line(self):
        for needle in (self.token, self.value):
            self.assertEqual(support.found_on_command_lines(needle), [])

    def test_not_in_dockers_disk_state(self):
        for needle in (self.token, self.value):
            self.assertEqual(support.found_on_docker_disk(needle), [], f"{needle[:12]}… found on disk")


SECRET = "reach-secret-value-" + "s" * 24


class ReachTest:
    """The same attacks on both runtimes, through the CLI with the real sidecar: from inside a bottle, only its
    sidecar's proxy leads anywhere, and the sidecar lets through only what the manifest allows."""

    runtime: support.Runtime

    @classmethod
    def setUpClass(cls):
        from .test_sidecar import Project

        super().setUpClass()
        cls.host_service = HostService()
        cls.project = Project({"bottles": {"reach": {"env": {"REACH_SECRET": "${REACH_SECRET}"},
                                                     "egress": {"allowlist": ["pypi.org"]},
                                                     "resources": {"memory": "3g", "cpus": 1.5,
                                                                   "reserve": {"memory": "1g", "cpus": 0.5}}}},
                               "agents": {"reach": {"bottle": "reach", "prompt": "test"}}},
                              {"REACH_SECRET": SECRET}, cls.runtime)
        out = cls.project.cli("start", "reach", "--yes", "--detach")
        if out.returncode != 0:
            cls.host_service.close()
            cls.project.tmp.cleanup()
            raise AssertionError(f"start --detach on {cls.runtime} failed: {out.stderr}")
        cls.name = out.stdout.strip()

    @classmethod
    def tearDownClass(cls):
        cls.project.cli("stop", cls.name)
        cls.host_service.close()
        cls.project.tmp.cleanup()
        super().tearDownClass()

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.project.cli("exec", self.name, "--", "sh", "-c", script, timeout=timeout)

    def connects(self, host: str, port: int) -> bool:
        """Whether the agent can open a TCP connection to host:port (bash's /dev/tcp, as a hostile agent)."""
        done = self.sh(support.connects_script(host, port))
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.strip() == "OPEN"

    def test_ps_and_exec_see_the_bottle(self):
        rows = json.loads(self.project.cli("ps", "--json").stdout)
        (row,) = [r for r in rows if r["name"] == self.name]
        self.assertEqual((row["agent"], row["state"]), ("reach", "running"))
        table = self.project.cli("ps").stdout.splitlines()
        self.assertEqual(table[0].split(), ["NAME", "AGENT", "BOTTLE", "UPTIME", "STATE", "RESULT"]
                         + (["NODE"] if self.runtime.nodes else []))
        self.assertEqual(self.sh('id -un; pwd; echo "$REACH_SECRET"').stdout.split(), ["claude", "/workspace", SECRET])

    def test_the_proxy_lets_allowed_hosts_through_and_refuses_others(self):
        allowed = self.sh("curl -s -o /dev/null -w '%{http_code}' --max-time 30 https://pypi.org/simple/pip/")
        self.assertEqual(allowed.stdout.strip(), "200", allowed.stderr)
        refused = self.sh("curl -s -o /dev/null -w '%{http_connect}' --max-time 30 https://example.com/")
        self.assertEqual(refused.stdout.strip(), "403", refused.stdout + refused.stderr)
        report = self.project.cli("logs", "--egress", "--json", self.name)
        self.assertEqual(report.returncode, 0, report.stderr)
        decisions = {(r["host"].split(":")[0], r["decision"]) for r in json.loads(report.stdout)}
        self.assertIn(("example.com", "blocked"), decisions)
        self.assertIn(("pypi.org", "allowed"), decisions)

    def test_a_secret_sent_to_an_allowed_host_is_blocked(self):
        out = self.sh(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 30 "
                      f"'https://pypi.org/simple/pip/?leak={SECRET}'")
        self.assertEqual(out.stdout.strip()[:1], "4", out.stdout + out.stderr)

    def test_nothing_but_the_sidecar_is_reachable(self):
        host = self.runtime.host_address()
        port = self.host_service.port
        # Controls: a workload of the runtime that is not a bottle reaches the same host service and neighbour,
        # so a refusal below is the bottle's doing, not a dead target's.
        self.assertTrue(self.runtime.plain_workload_reaches(host, port))
        with self.runtime.neighbour() as (neighbour, neighbour_port):
            self.assertTrue(self.runtime.plain_workload_reaches(neighbour, neighbour_port))
            nameserver = self.sh("awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf").stdout.strip()
            targets = [(a, port) for a in sorted(host_addresses() | {host})]
            targets += [(neighbour, neighbour_port), ("169.254.169.254", 80), ("1.1.1.1", 443),
                        ("203.0.113.80", 443), ("2606:4700:4700::1111", 443), ("fd00::1", 80)]
            if nameserver:
                targets.append((nameserver, 53))
            for target in targets:
                with self.subTest(target=target):
                    self.assertFalse(self.connects(*target))
        udp = self.sh(f"timeout 5 bash -c 'echo x > /dev/udp/{nameserver or host}/53' 2>&1; echo $?")
        self.assertNotEqual(udp.stdout.strip().splitlines()[-1], "0", udp.stdout)
        resolved = self.sh("getent hosts github.com registry.npmjs.org")
        self.assertNotEqual(resolved.returncode, 0)
        self.assertEqual(resolved.stdout.strip(), "")

    def test_every_listening_port_but_the_proxy_is_refused(self):
        """Whatever listens where the agent could reach it (on Kubernetes the pod's loopback, shared with the
        sidecar: pipelock and its metrics) stays out of reach; only the proxy port leads anywhere."""
        ports = sorted(support.listening_ports(self.sh("cat /proc/net/tcp /proc/net/tcp6").stdout))
        self.assertIn(bottle.PROXY_PORT, ports)
        for port in ports:
            if port == bottle.PROXY_PORT:
                continue
            for host in ("127.0.0.1", "127.0.0.2", "localhost"):
                with self.subTest(port=port, host=host):
                    self.assertFalse(self.connects(host, port))
        # Its own servers on loopback still work, as a developer's would.
        served = self.sh("socat TCP-LISTEN:18080,bind=127.0.0.1,reuseaddr SYSTEM:'echo mine' >/dev/null 2>&1 & "
                         "sleep 0.5; bash -c 'exec 3<>/dev/tcp/127.0.0.1/18080 && head -1 <&3'; kill $! 2>/dev/null")
        self.assertEqual(served.stdout.strip(), "mine", served.stderr)

    def test_a_neighbour_of_the_sidecar_finds_nothing_of_it_listening(self):
        """Other workloads on the sidecar's network (on Docker's default bridge, anyone's containers) reach
        nothing of the sidecar: pipelock and its metrics listen on its loopback, the gate on the socket."""
        address, listening = self.runtime.sidecar_endpoint(self.name)
        pipelock = {int(a.rsplit(":", 1)[1]) for a in (egress.PIPELOCK_LISTEN, egress.METRICS_LISTEN,
                                                       egress.SSH_PIPELOCK_LISTEN, egress.SSH_METRICS_LISTEN)}
        self.assertIn(int(egress.PIPELOCK_LISTEN.rsplit(":", 1)[1]), listening)  # control: it is the live sidecar
        ports = sorted(listening | pipelock | {bottle.PROXY_PORT})
        with self.runtime.neighbour() as (neighbour, neighbour_port):
            # Controls: a workload there reaches a neighbour's server, and (on Docker, where nothing but the
            # sidecar's own rules stand in the way) a server put beside the sidecar at the same address.
            targets = [(neighbour, neighbour_port)]
            beside = getattr(self.runtime, "listener_beside_sidecar", None)
            with beside(self.name) if beside else contextlib.nullcontext() as control_port:
                if control_port:
                    targets.append((address, control_port))
                reached = self.runtime.plain_workload_connects(targets + [(address, p) for p in ports])
        self.assertEqual(reached[:len(targets)], [True] * len(targets))
        self.assertEqual(dict(zip(ports, reached[len(targets):])), dict.fromkeys(ports, False))

    def test_the_proxy_port_is_the_sidecars_and_no_one_can_take_it(self):
        """bottle-init handed the port's listening socket to the gate (no relay runs in the bottle); its handoff
        socket is gone, so the agent cannot hand over one of its own, and it cannot take the port either."""
        out = self.sh("ps -eo comm=; python3 -I - <<'EOF'\n"
                      "import os, socket\n"
                      "for reuseport in (False, True):\n"
                      "    s = socket.socket()\n"
                      "    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                      "    if reuseport:\n"
                      "        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
                      "    try:\n"
                      f"        s.bind(('127.0.0.1', {bottle.PROXY_PORT})); s.listen(); print('TOOK-THE-PORT')\n"
                      "    except OSError as e:\n"
                      "        print('port', e.errno)\n"
                      "mine = socket.socket(); mine.bind(('127.0.0.1', 0)); mine.listen()\n"
                      "h = socket.socket(socket.AF_UNIX)\n"
                      "try:\n"
                      f"    h.connect('{bottle.PROXY_DIR}/handoff.sock')\n"
                      "    socket.send_fds(h, [b'h'], [mine.fileno()]); print('HANDED', h.recv(100))\n"
                      "except OSError as e:\n"
                      "    print('handoff', type(e).__name__)\n"
                      f"print(*sorted(os.listdir('{bottle.PROXY_DIR}')))\n"
                      "EOF")
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.splitlines()
        self.assertNotIn("socat", [c.strip() for c in lines[:-4]])
        self.assertEqual(lines[-4:-1], ["port 98", "port 98", "handoff FileNotFoundError"])  # EADDRINUSE
        self.assertNotIn("handoff.sock", lines[-1].split())
        self.assertNotIn("proxy.sock", lines[-1].split())  # the way in before the handoff is gone too
        self.assertIn("bundle.pem", lines[-1].split())  # control: the listing is the proxy folder's
        self.assertTrue(self.sh("curl -s -o /dev/null --max-time 30 https://pypi.org/simple/").returncode == 0)

    def test_the_agent_cannot_gain_privileges_or_open_the_network(self):
        out = self.sh("iptables -P OUTPUT ACCEPT 2>/dev/null; iptables -F OUTPUT 2>/dev/null; "
                      "ip link set lo down 2>/dev/null; sudo -n true 2>/dev/null && echo SUDO; "
                      "su -c true root </dev/null 2>/dev/null && echo SU; "
                      "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status")
        self.assertEqual(out.stdout.split(), ["CapPrm:", "0000000000000000", "CapEff:", "0000000000000000",
                                              "NoNewPrivs:", "1"])
        self.assertFalse(self.connects("1.1.1.1", 443))
        self.assertTrue(self.sh("curl -s -o /dev/null --max-time 30 https://pypi.org/simple/").returncode == 0)

    def test_the_manifests_limits_hold_inside(self):
        out = self.sh("cd /sys/fs/cgroup && if [ -f cpu.max ]; then cat cpu.max memory.max; else "  # v2, else v1
                      "cat cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us memory/memory.limit_in_bytes; fi")
        self.assertEqual(out.stdout.split(), ["150000", "100000", str(3 * 2**30)], out.stderr)

    def test_the_secret_is_in_no_description_of_the_bottle(self):
        described = self.runtime.described(self.name)
        self.assertIn(self.name, described)  # control: the description is the bottle's
        self.assertNotIn(SECRET, described)
        self.assertEqual(support.found_on_command_lines(SECRET), [])


support.on_each_runtime(ReachTest, globals())
