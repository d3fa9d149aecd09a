// Command gate is the entry point of a bottle's sidecar: the only process the bottle can reach.
//
// At start it reads its configuration on stdin (never from a file Docker keeps), makes the bottle's own
// certificate authority, writes pipelock's configuration into its tmpfs, starts pipelock, and accepts the
// bottle's connections on its proxy port, whose socket bottle-init hands over (handoff.go): the bottle has
// no other way to it.
// Each connection from the bottle goes one of two ways:
//
//   - to Claude Code's API (and the gateway ANTHROPIC_BASE_URL names): the gate ends the bottle's TLS
//     with the bottle's CA, puts the user's real token where the bottle's placeholder was (only for hosts
//     the user's home manifest chose), on the API's own paths only, and sends the request on through
//     pipelock, which sees a tunnel to an allowed host (a plain-HTTP gateway is dialed directly, under the
//     same private-address rule);
//   - everything else: spliced, byte for byte, to pipelock, which judges it (allowlist, TLS interception,
//     DLP on URLs, headers and bodies, SSRF), except that ports of private hosts are checked here first.
//
// pipelock's log comes to the gate on a pipe and is counted per host, decision and reason, in memory and
// in a report file; a flood of requests can make it fold hosts together, never stop counting.
//
// Tunnels to the SSH hosts of the manifest go to a second pipelock that does not look inside them.
//
// Only the Go standard library is used: net/http, httputil.ReverseProxy and crypto/tls do the HTTP and TLS
// work. It builds with the Go that Debian 12 ships (1.19).
package main

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Where things are, inside the sidecar container.
const (
	stateDir        = "/run/gate"                   // tmpfs, this container's only: config, secrets, CA key
	pipelockAddr    = "127.0.0.1:8888"              // pipelock listens here, in the sidecar's own network namespace
	sshPipelockAddr = "127.0.0.1:8889"              // and a second one, which does not look inside, for SSH
	reportFile      = stateDir + "/report.json"     // what `gate report` prints if the gate does not answer
	reportSocket    = stateDir + "/report.sock"     // where the running gate answers `gate report` at once
	caKeyFile       = stateDir + "/ca-key.pem"      // read by pipelock for its interception, never leaves
	caCertFile      = stateDir + "/ca.pem"          // the same certificate pipelock signs with
	upstreamCAFile  = stateDir + "/upstream-ca.pem" // the CAs servers out there are checked against
	healthTimeout   = 30 * time.Second
	maxRestarts     = 5 // of a pipelock that stopped: more means something keeps killing it
)

// Config is what the CLI writes on the gate's stdin at start.
type Config struct {
	ProxyDir       string `json:"proxy_dir"`       // the volume the bottle mounts read-only
	PipelockConfig string `json:"pipelock_config"` // pipelock.yaml, as text
	// SSH is not TLS, so pipelock cannot look inside it: tunnels to the SSH entries' host:port go to a second
	// pipelock that judges them by name (its allowlist is those hosts only).
	SSHPipelockConfig string   `json:"ssh_pipelock_config"`
	SSHTargets        []string `json:"ssh_targets"` // host:port
	Secrets           []string `json:"secrets"`     // pipelock's secrets file, and what the report redacts
	// The secrets themselves (Secrets adds encodings of them for pipelock): what the gate looks for, in every
	// form it knows. Secrets if empty.
	Scanned      []string            `json:"scanned"`
	Token        string              `json:"token"`       // the user's real OAuth token
	Placeholder  string              `json:"placeholder"` // what the bottle has in its place
	Credentials  []CredentialHost    `json:"credential_hosts"`
	PrivatePorts map[string][]string `json:"private_ports"` // private host -> the ports it may be reached on
	UpstreamCA   string              `json:"upstream_ca"`   // PEM: more CAs to trust for the servers reached
	// Passthrough hosts ("*." wildcards too) are pipelock's passthrough_domains: their HTTPS is judged by
	// name only, by pipelock and the gate alike.
	Passthrough []string `json:"passthrough"`
	// MaxAnswer is pipelock's fetch_proxy.max_response_mb in bytes: it cuts a longer plain-HTTP answer to
	// exactly this length without saying so, so an answer of this length is taken as cut.
	MaxAnswer int64 `json:"max_inspected_response"`
	// Files go into ProxyDir for the bottle to read (Claude Code's managed settings): the bottle mounts it
	// read-only, so the agent cannot change them.
	Files map[string]string `json:"files"`
}

// CredentialHost is an endpoint that gets the real token, on the given paths only.
type CredentialHost struct {
	Host  string   `json:"host"`
	Port  string   `json:"port"`
	TLS   bool     `json:"tls"`
	Paths []string `json:"paths"` // path prefixes; "/" for all
	// Inject: put the user's token where the placeholder is. False for a project file's gateway, which
	// the conversation goes to (the user allowed that) but the token does not.
	Inject bool `json:"inject"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "report" {
		report()
		return
	}
	if err := run(); err != nil {
		fmt.Println("error: " + err.Error())
		os.Exit(1)
	}
}

// report prints the egress report (for `claude-bottle logs --egress`, through docker exec): the running
// gate's counts as they are now, or, if it does not answer, the file it keeps writing.
func report() {
	if conn, err := net.DialTimeout("unix", reportSocket, 2*time.Second); err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		data, err := io.ReadAll(conn)
		conn.Close()
		if err == nil && len(data) > 0 {
			os.Stdout.Write(data)
			return
		}
	}
	data, err := os.ReadFile(reportFile)
	if err != nil {
		data = []byte(`{"rows": [], "folded": 0}`)
	}
	os.Stdout.Write(data)
}

// serveReports answers each connection on `path` with the counts as they are now, so a report asked
// for right after a request includes it (the file is written only every 250 ms).
func serveReports(counter *counter, path string) error {
	os.Remove(path)
	listener, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			conn.Write(counter.snapshot())
			conn.Close()
		}
	}()
	return nil
}

func run() error {
	var cfg Config
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		return fmt.Errorf("reading the configuration on stdin: %v", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	// Open before anything slow: bottle-init, starting beside the sidecar, hands its port over here.
	handoff := filepath.Join(cfg.ProxyDir, handoffName)
	handed, err := listenForHandoff(handoff)
	if err != nil {
		return fmt.Errorf("opening the handoff socket: %v", err)
	}
	authority, err := newAuthority()
	if err != nil {
		return fmt.Errorf("making the bottle's certificate authority: %v", err)
	}
	system, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return err
	}
	// What the sidecar trusts on the way out: the system's CAs (with the user's, built in) and the bottle's.
	upstream := append(append(system, '\n'), []byte(cfg.UpstreamCA)...)
	files := map[string][]byte{
		upstreamCAFile:                         upstream,
		filepath.Join(stateDir, "secrets.txt"): []byte(strings.Join(cfg.Secrets, "\n") + "\n"),
		caKeyFile:                              authority.keyPEM,
		caCertFile:                             authority.certPEM,
	}
	for path, data := range files {
		if err := writeFile(path, data, 0o600); err != nil {
			return err
		}
	}
	// For the bottle to trust: the same CAs the sidecar trusts, and the bottle's own.
	bundle := append(append(append([]byte{}, upstream...), '\n'), authority.certPEM...)
	if err := writeFile(filepath.Join(cfg.ProxyDir, "bundle.pem"), bundle, 0o644); err != nil {
		return err
	}
	for name, text := range cfg.Files {
		if name != filepath.Base(name) || name == handoffName || name == "bundle.pem" || strings.HasPrefix(name, ".") {
			return fmt.Errorf("not a file name for the bottle: %q", name)
		}
		if err := writeFile(filepath.Join(cfg.ProxyDir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}

	counter := newCounter(cfg.Secrets)
	go counter.keepWriting(reportFile)
	if err := serveReports(counter, reportSocket); err != nil {
		return fmt.Errorf("answering reports: %v", err)
	}
	instances := []*instance{{addr: pipelockAddr, text: cfg.PipelockConfig}}
	if cfg.SSHPipelockConfig != "" {
		instances = append(instances, &instance{addr: sshPipelockAddr, text: cfg.SSHPipelockConfig})
	}
	exited := make(chan *instance, len(instances))
	for i, in := range instances {
		in.config = filepath.Join(stateDir, fmt.Sprintf("pipelock-%d.yaml", i))
		if err := writeFile(in.config, []byte(in.text), 0o600); err != nil {
			return err
		}
		if err := in.start(counter, exited); err != nil {
			return err
		}
	}
	// Both start at once; each spends tens of milliseconds compiling its patterns.
	for _, in := range instances {
		if err := waitHealthy(in.addr, exited); err != nil {
			return err
		}
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(upstream)
	gate := newGate(&cfg, authority, counter, roots)
	go func() {
		for l := range handed {
			gate.serve(l)
		}
	}()

	fmt.Println("ready") // the CLI waits for this line; nothing else is ever written here
	os.Stdout.Close()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	restarts := 0
	for {
		select {
		case <-signals:
			for _, in := range instances {
				in.cmd.Process.Signal(syscall.SIGTERM)
			}
			return nil
		case in := <-exited:
			// Most likely the memory limit: an agent that asks for several big answers at once can make
			// pipelock's buffers outgrow it. Requests fail (closed) while it is away; it comes back, a few
			// times, and the report says so.
			restarts++
			counter.add("(sidecar)", "warned", fmt.Sprintf("pipelock stopped (%v; out of memory?) and was restarted", in.err))
			if restarts > maxRestarts {
				counter.flush(reportFile)
				return fmt.Errorf("pipelock stopped %d times: %v", restarts, in.err)
			}
			if err := in.start(counter, exited); err != nil {
				counter.flush(reportFile)
				return err
			}
		}
	}
}

// instance is one pipelock the gate runs.
type instance struct {
	addr, text, config string
	cmd                *exec.Cmd
	err                error // why it stopped
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// start runs the pipelock, its log (stdout and stderr) on a pipe to the counter.
func (in *instance) start(counter *counter, exited chan *instance) error {
	cmd := exec.Command("/pipelock", "run", "--config", in.config, "--listen", in.addr)
	logs, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+upstreamCAFile) // Go's TLS reads its roots there
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting pipelock: %v", err)
	}
	in.cmd = cmd
	go func() {
		counter.read(logs)
		in.err = cmd.Wait()
		exited <- in
	}()
	return nil
}

// waitHealthy waits until the pipelock at addr answers on its health endpoint, or fails with what it said.
func waitHealthy(addr string, exited chan *instance) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(healthTimeout)
	for time.Now().Before(deadline) {
		select {
		case in := <-exited:
			return fmt.Errorf("pipelock stopped while starting: %v", in.err)
		default:
		}
		resp, err := client.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		// It is usually up some 25 ms after it was started: a coarser wait would be most of the wait.
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("pipelock was not healthy after %v", healthTimeout)
}

// bufferedConn is a connection whose first bytes were already read into a bufio.Reader.
type bufferedConn struct {
	net.Conn
	reader *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.reader.Read(p) }

func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
