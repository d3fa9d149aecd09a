"""From inside a real bottle container: the proxy socket is the only way out, and secrets stay off disk.

The sidecar here is a plain listener on the shared egress network, standing where
the gate and pipelock run (test_sidecar attacks the real ones); what is under
test is the bottle container and the path to its sidecar, which are the
product's own (support.TestBottle builds them with the product's specs).
"""

import http.server
import ipaddress
import json
import secrets
import subprocess

from claude_bottle import bottle, cleanup

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
        egress_gateway = support.sdk().networks.get(bottle.EGRESS_NETWORK).attrs["IPAM"]["Config"][0]["Gateway"]
        addresses = host_addresses() | {egress_gateway, "172.17.0.1"}
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
        sidecar_ip = self.b.ip_of(n.sidecar, bottle.EGRESS_NETWORK)
        code, out = self.curl_direct(f"http://{sidecar_ip}:{support.STANDIN_PORT}/")
        self.assertNotEqual(code, 0)
        self.assertNotIn(support.LISTENER_REPLY, out)
        code, out = self.a.sh(f"ls {bottle.PROXY_DIR}")
        self.assertEqual(out.split(), ["proxy.sock"])  # its own socket only

    def test_bottle_container_is_hardened(self):
        info = support.sdk().api.inspect_container(self.a.plan.names.container)
        hc = info["HostConfig"]
        self.assertEqual(hc["NetworkMode"], "none")
        self.assertEqual(hc["CapDrop"], ["ALL"])
        self.assertEqual(hc["SecurityOpt"], ["no-new-privileges"])
        self.assertTrue(hc["Init"])
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
