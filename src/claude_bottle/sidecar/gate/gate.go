package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

type gate struct {
	cfg         *Config
	authority   *authority
	counter     *counter
	credentials map[string]CredentialHost // by host:port
	injectors   map[string]http.Handler   // by host:port
	upstream    *http.Transport           // through pipelock
	inspectTLS  *tls.Config               // for pipelock, which ends the TLS again with the bottle's CA
	scanner     *secretScanner            // the bottle's secrets, looked for in what the gate reads
	passthrough []string                  // hosts pipelock does not look inside: the gate does not either
	direct      *http.Transport           // to a plain-HTTP gateway ANTHROPIC_BASE_URL names
	plain       http.Handler              // forwards any other plain-HTTP request through pipelock, once read

	pipelock  string // where inspected tunnels are opened: pipelockAddr (a test's stand-in otherwise)
	tunnelsMu sync.Mutex
	tunnels   map[string]*tunnels // by inspected target (host:port): its tunnels through pipelock
	inFlight  chan struct{}       // a slot per inspected request under way (inspectedInFlight)

	sshPipelock string // the same for the pipelock of SSH targets: sshPipelockAddr
	passedMu    sync.Mutex
	passed      map[string]time.Time // when pipelock last let a tunnel through, by its address and target
	passedFor   time.Duration        // how long that lets the next tunnels start at once: tunnelLife
}

func (cfg *Config) scanned() []string {
	if len(cfg.Scanned) > 0 {
		return cfg.Scanned
	}
	return cfg.Secrets
}

func newGate(cfg *Config, a *authority, c *counter, roots *x509.CertPool) *gate {
	g := &gate{cfg: cfg, authority: a, counter: c, credentials: map[string]CredentialHost{},
		injectors: map[string]http.Handler{}, scanner: newSecretScanner(cfg.scanned()), passthrough: cfg.Passthrough,
		pipelock: pipelockAddr, tunnels: map[string]*tunnels{}, inFlight: make(chan struct{}, inspectedInFlight),
		sshPipelock: sshPipelockAddr, passed: map[string]time.Time{}, passedFor: tunnelLife}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	g.upstream = &http.Transport{
		Proxy:               http.ProxyURL(&url.URL{Scheme: "http", Host: pipelockAddr}),
		DialContext:         dialer.DialContext,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		ForceAttemptHTTP2:   false,
		DisableCompression:  true, // bodies pass as they come
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	// Past the gate, pipelock ends the TLS of an inspected host with a certificate of the bottle's CA.
	inspectRoots := x509.NewCertPool()
	if roots != nil {
		inspectRoots = roots.Clone()
	}
	if a != nil {
		inspectRoots.AppendCertsFromPEM(a.certPEM)
	}
	g.inspectTLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: inspectRoots, NextProtos: []string{"h2", "http/1.1"}}
	// pipelock would rightly block a request that carries the user's token in the clear, and would judge
	// the conversation's body by DLP, so a plain-HTTP gateway ANTHROPIC_BASE_URL names is reached
	// directly, and only it.
	// Past pipelock means past its SSRF protection too, so the direct dialer keeps that rule itself.
	g.direct = &http.Transport{DialContext: g.dialPublicOrListed(dialer), DisableCompression: true,
		IdleConnTimeout: 90 * time.Second}
	for _, cred := range cfg.Credentials {
		k := net.JoinHostPort(strings.ToLower(cred.Host), cred.Port)
		g.credentials[k] = cred
		g.injectors[k] = g.injector(cred)
	}
	plain := g.reverseProxy(nil)
	plain.ModifyResponse = g.refuseCutAnswers
	g.plain = g.scanned(plain, "")
	return g
}

func (g *gate) serve(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go g.handle(conn)
	}
}

// handle routes one connection from the bottle by its first request.
func (g *gate) handle(conn net.Conn) {
	reader := bufio.NewReaderSize(conn, 16<<10)
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	start, err := reader.Peek(8)
	if err != nil {
		conn.Close()
		return
	}
	conn.SetReadDeadline(time.Time{})
	if !bytes.HasPrefix(start, []byte("CONNECT ")) {
		g.serveHTTP(&bufferedConn{conn, reader}, nil)
		return
	}
	req, err := http.ReadRequest(reader)
	if err != nil {
		conn.Close()
		return
	}
	host, port, ok := canonicalTarget(req.Host)
	if !ok {
		refuse(conn, "a CONNECT target is a host name or an IP address and a port")
		return
	}
	// From here on the target is judged, and sent on to pipelock, in this one spelling: pipelock reads
	// "[name]:443" or "NAME.:443" as name:443, so any other spelling would pass the gate's checks by.
	target := net.JoinHostPort(host, port)
	// A name is looked up, and sent to the server, before any request in the tunnel is read: a secret spelled
	// out in the labels of an allowed wildcard domain, or its pieces over several names, is refused here.
	if whole, complete := g.scanner.found([]byte(host), true, carried{}); whole || complete {
		why := "the CONNECT target's name carries a secret of the bottle's"
		if !whole {
			why = "the CONNECT target's name would complete a secret of the bottle's sent in pieces"
		}
		g.counter.add(g.scanner.redactedHost(host), "blocked", why)
		refuse(conn, why)
		return
	}
	why := g.portRefused(host, port)
	if why == "" {
		why = g.credentialPortRefused(host, port)
	}
	if why != "" {
		g.counter.add(host+":"+port, "blocked", why)
		refuse(conn, why)
		return
	}
	if cred, ok := g.credentials[target]; ok {
		if !cred.TLS {
			// A tunnel would reach it past the gate's checks, unread (pipelock passes credential hosts through).
			why := "a plain-HTTP gateway is reached with plain HTTP requests, not through a tunnel"
			g.counter.add(target, "blocked", why)
			refuse(conn, why)
			return
		}
		io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		g.serveHTTP(tls.Server(&bufferedConn{conn, reader}, g.tlsConfig(host)), g.injectors[target])
		return
	}
	judge := g.pipelock
	for _, ssh := range g.cfg.SSHTargets {
		if strings.EqualFold(ssh, target) {
			judge = g.sshPipelock
		}
	}
	if judge == g.pipelock && !matchesHost(host, g.passthrough) {
		// Inspected HTTPS: pipelock judges the target first (its refusal goes back as it is); then the gate
		// ends the TLS and reads each request itself, and sends it on through a tunnel to that target, where
		// pipelock reads it too, to the target and nowhere else. The tunnels stay open for the bottle's next
		// connections to the same target (pipelock has judged it), each request still read by both.
		t := g.tunnelsTo(target)
		if !t.judged() {
			tunnel, refusal, err := g.dialInspected(target)
			if err != nil {
				refuse(conn, "the sidecar's proxy is not answering: "+err.Error())
				return
			}
			if refusal != nil {
				refusal.Write(conn)
				conn.Close()
				return
			}
			t.offer(tunnel)
			defer t.drop(tunnel) // a connection that sends nothing does not leave its tunnel behind
		}
		io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		g.serveHTTP(tls.Server(&bufferedConn{conn, reader}, g.tlsConfig(host)), t.handler)
		return
	}
	g.passThrough(&bufferedConn{conn, reader}, judge, target)
}

// passThrough sends a tunnel the gate does not look inside (a passthrough host, an SSH target) to the
// pipelock at `judge`, which judges the target by its name, then copies it both ways unread.
//
// The first tunnel to a target waits for pipelock's answer, and the bottle gets that answer as it is (a
// refusal says why). Once pipelock has let a tunnel to the target through (within tunnelLife), the bottle
// is told to go ahead at once and its first bytes (a TLS ClientHello) wait in pipelock, which reads none of
// them before it has judged this CONNECT as well, and sends none on unless it lets this one through too:
// the handshake starts the moment pipelock has dialled the server, rather than a round trip to the bottle
// later. A refusal then (pipelock's rate limit, kill switch, a failed dial, a name its SNI check finds) ends
// the bottle's connection without an answer; `logs --egress` says why, from pipelock's log.
func (g *gate) passThrough(conn *bufferedConn, judge, target string) {
	defer conn.Close()
	key := judge + " " + target
	goAhead := g.passedLately(key)
	if goAhead {
		io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	}
	upstream, err := net.DialTimeout("tcp", judge, 10*time.Second)
	if err != nil {
		if !goAhead {
			refuse(conn, "the sidecar's proxy is not answering")
		}
		return
	}
	defer upstream.Close()
	io.WriteString(upstream, connectRequest(target))
	answer := bufio.NewReader(upstream)
	if !goAhead {
		upstream.SetReadDeadline(time.Now().Add(60 * time.Second))
		refusal, err := tunnelAnswer(answer)
		if err != nil {
			refuse(conn, "the sidecar's proxy ended the tunnel without an answer")
			return
		}
		if refusal != nil {
			refusal.Write(conn) // and nothing the bottle sent behind its CONNECT goes on to pipelock
			return
		}
		upstream.SetReadDeadline(time.Time{})
		g.notePassed(key)
		io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		splice(conn, &bufferedConn{upstream, answer})
		return
	}
	sent := make(chan struct{})
	go func() {
		copyStream(upstream, conn)
		upstream.(*net.TCPConn).CloseWrite()
		close(sent)
	}()
	upstream.SetReadDeadline(time.Now().Add(60 * time.Second))
	if refusal, err := tunnelAnswer(answer); err != nil || refusal != nil {
		conn.Close() // pipelock, asked to close after a refusal, reads none of the bottle's bytes as a request
		upstream.Close()
		<-sent
		return
	}
	upstream.SetReadDeadline(time.Time{})
	copyStream(conn, &bufferedConn{upstream, answer})
	conn.CloseWrite()
	<-sent
}

// connectRequest asks pipelock for a tunnel to target. "Connection: close" makes pipelock end the
// connection after an answer that is not a tunnel: bytes the bottle sent on (the gate passes them before
// pipelock's answer to a target it has let through) would otherwise be read by pipelock as a new request
// of its own, one the gate never read.
func connectRequest(target string) string {
	return "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\nConnection: close\r\n\r\n"
}

// passedLately says whether pipelock let a tunnel to `key` (its address and the target) through within
// tunnelLife.
func (g *gate) passedLately(key string) bool {
	g.passedMu.Lock()
	defer g.passedMu.Unlock()
	when, ok := g.passed[key]
	return ok && time.Since(when) < g.passedFor
}

func (g *gate) notePassed(key string) {
	g.passedMu.Lock()
	defer g.passedMu.Unlock()
	if _, known := g.passed[key]; !known && len(g.passed) >= keptTargets {
		g.passed = map[string]time.Time{} // an agent walking a wildcard domain's names: start over
	}
	g.passed[key] = time.Now()
}

// tunnelAnswer reads pipelock's answer to a CONNECT: nil if it opened the tunnel (the tunnel's bytes follow
// in reader), or else its refusal, with the refusal's body (at most 64 KiB) read.
func tunnelAnswer(reader *bufio.Reader) (*http.Response, error) {
	resp, err := http.ReadResponse(reader, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode == http.StatusOK {
		return nil, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Close = true
	return resp, nil
}

// credentialPortRefused says why a host the user's token goes to may not be reached on this port ("" if it
// may): on another port the gate would not judge its paths and credentials, and pipelock would pass it through
// unread.
func (g *gate) credentialPortRefused(host, port string) string {
	for _, cred := range g.credentials {
		if strings.EqualFold(cred.Host, strings.Trim(host, "[]")) && cred.Port != port {
			return fmt.Sprintf("%s is reached on port %s only", cred.Host, cred.Port)
		}
	}
	return ""
}

// portRefused says why a private host may not be reached on this port ("" if it may).
func (g *gate) portRefused(host, port string) string {
	ports, listed := g.cfg.PrivatePorts[strings.Trim(host, "[]")]
	if !listed || len(ports) == 0 {
		return ""
	}
	for _, p := range ports {
		if p == port {
			return ""
		}
	}
	return fmt.Sprintf("port %s of private host %s is not allowed (egress.private_hosts allows %s)", port, host,
		strings.Join(ports, ", "))
}

// dialPublicOrListed dials the address it checked (no second lookup to rebind): a private, loopback or
// link-local one only if egress.private_hosts lists the host or that address.
func (g *gate) dialPublicOrListed(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("%s has no address", host)
		}
		_, nameListed := g.cfg.PrivatePorts[strings.ToLower(host)]
		ip := ips[0].IP
		if _, ipListed := g.cfg.PrivatePorts[ip.String()]; isPrivate(ip) && !nameListed && !ipListed {
			return nil, fmt.Errorf("%s is a private address (%s): list it in egress.private_hosts to reach it", host, ip)
		}
		return d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
	}
}

var privateNets = func() []*net.IPNet {
	var nets []*net.IPNet
	for _, cidr := range []string{"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.168.0.0/16", "::1/128", "::/128", "fc00::/7", "fe80::/10"} {
		_, n, _ := net.ParseCIDR(cidr)
		nets = append(nets, n)
	}
	return nets
}()

func isPrivate(ip net.IP) bool {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	for _, n := range privateNets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func (g *gate) tlsConfig(host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" && !strings.EqualFold(hello.ServerName, host) {
				return nil, fmt.Errorf("TLS name %q is not the CONNECT target %q", hello.ServerName, host)
			}
			return g.authority.leaf(host)
		},
	}
}

// serveHTTP serves the requests on one connection: plain HTTP proxy requests (handler nil), or the requests
// inside a TLS tunnel the gate ended.
func (g *gate) serveHTTP(conn net.Conn, handler http.Handler) {
	if handler == nil {
		handler = http.HandlerFunc(g.forwardPlain)
	}
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 60 * time.Second, IdleTimeout: 30 * time.Minute,
		ErrorLog: quietLog}
	server.Serve(newOneConnListener(conn))
}

// forwardPlain sends a plain-HTTP proxy request on to pipelock, or to the injector if it goes to a
// plain-HTTP gateway ANTHROPIC_BASE_URL names.
func (g *gate) forwardPlain(w http.ResponseWriter, r *http.Request) {
	if r.URL.Host == "" {
		http.Error(w, "claude-bottle: this is a proxy; ask for an absolute URL", http.StatusBadRequest)
		return
	}
	if !strings.EqualFold(r.URL.Scheme, "http") {
		// The gate would make the TLS connection itself, where neither its own checks nor pipelock's could read it.
		why := "only http:// URLs are proxied as plain requests; HTTPS goes through CONNECT"
		g.counter.add(r.URL.Host, "blocked", why)
		http.Error(w, "claude-bottle: "+why, http.StatusBadRequest)
		return
	}
	port := r.URL.Port()
	if port == "" {
		port = "80"
	}
	// Judged, and sent on to pipelock, in one spelling, as a CONNECT target is ("name.", "NAME").
	host, port, ok := canonicalTarget(net.JoinHostPort(r.URL.Hostname(), port))
	if !ok {
		http.Error(w, "claude-bottle: a URL's host is a host name or an IP address", http.StatusBadRequest)
		return
	}
	r.URL.Host = net.JoinHostPort(host, port)
	why := g.portRefused(host, port)
	if why == "" {
		why = g.credentialPortRefused(host, port)
	}
	if why != "" {
		g.counter.add(host+":"+port, "blocked", why)
		http.Error(w, "claude-bottle: "+why, http.StatusForbidden)
		return
	}
	k := net.JoinHostPort(host, port)
	if cred, ok := g.credentials[k]; ok && !cred.TLS {
		g.injectors[k].ServeHTTP(w, r)
		return
	}
	g.plain.ServeHTTP(w, r)
}

// refusal is an answer the gate will not pass on, and why.
type refusal string

func (r refusal) Error() string { return string(r) }

// refuseCutAnswers turns a plain-HTTP answer pipelock cut short (without saying so) into an error, so a
// download never arrives truncated. pipelock has read such answers whole already, so reading them here costs
// no time; a streamed answer (server-sent events) is passed on as it comes.
func (g *gate) refuseCutAnswers(resp *http.Response) error {
	if g.cfg.MaxAnswer <= 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxAnswer+1))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if int64(len(body)) >= g.cfg.MaxAnswer {
		why := fmt.Sprintf("an answer of %d MB or more is more than the sidecar inspects (use HTTPS and egress.passthrough "+
			"for big downloads)", g.cfg.MaxAnswer>>20)
		g.counter.add(resp.Request.URL.Hostname(), "blocked", why)
		return refusal(why)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
	resp.Header.Del("Transfer-Encoding")
	resp.TransferEncoding = nil
	return nil
}

// allowedPath says whether a credential host's token may go to this URL's path (prefixes; "/" for all). A
// path that a server could read as another one (dot segments, encoded dots, slashes or backslashes) is refused:
// Claude Code sends none, and a prefix check cannot judge them.
func allowedPath(prefixes []string, u *url.URL) bool {
	escaped := strings.ToLower(u.EscapedPath())
	for _, sneaky := range []string{"%2e", "%2f", "%5c", "\\"} {
		if strings.Contains(escaped, sneaky) {
			return false
		}
	}
	for _, segment := range strings.Split(u.Path, "/") {
		if segment == "." || segment == ".." {
			return false
		}
	}
	for _, prefix := range prefixes {
		if strings.HasPrefix(u.Path, prefix) {
			return true
		}
	}
	return false
}

// injector puts the real token where the bottle's placeholder is, on the host's paths only. A request that
// carries any other credential is refused: the bottle may use this host only as the user.
func (g *gate) injector(cred CredentialHost) http.Handler {
	target := cred.Host
	if !(cred.TLS && cred.Port == "443") && !(!cred.TLS && cred.Port == "80") {
		target = net.JoinHostPort(cred.Host, cred.Port)
	}
	scheme := "http"
	if cred.TLS {
		scheme = "https"
	}
	proxy := g.reverseProxy(&url.URL{Scheme: scheme, Host: target})
	if !cred.TLS {
		proxy.Transport = g.direct
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowedPath(cred.Paths, r.URL) {
			g.counter.add(cred.Host, "blocked", "not a path of Claude Code's API: "+r.URL.Path)
			http.Error(w, "claude-bottle: "+r.URL.Path+" is not a path the bottle's credential is for", http.StatusForbidden)
			return
		}
		auth, key := r.Header.Get("Authorization"), r.Header.Get("X-Api-Key")
		switch {
		case len(r.Header.Values("Authorization")) > 1 || len(r.Header.Values("X-Api-Key")) > 1:
			// Get reads the first only: an empty first one would hide a credential after it.
			g.counter.add(cred.Host, "blocked", "a credential other than the bottle's own")
			http.Error(w, "claude-bottle: one credential at most may be sent to "+cred.Host, http.StatusForbidden)
			return
		case auth == "" && key == "":
			g.counter.add(cred.Host, "allowed", "allowed")
		case auth == "Bearer "+g.cfg.Placeholder && key == "" && cred.Inject:
			if why := refusedFetch(r); why != "" {
				g.counter.add(cred.Host, "blocked", why)
				http.Error(w, "claude-bottle: blocked: "+why, http.StatusForbidden)
				return
			}
			r.Header.Set("Authorization", "Bearer "+g.cfg.Token)
			g.counter.add(cred.Host, "allowed", "the user's token added by the sidecar")
		case auth == "Bearer "+g.cfg.Placeholder && key == "":
			g.counter.add(cred.Host, "allowed", "allowed (the bottle's placeholder, not your token: a project file's gateway)")
		default:
			g.counter.add(cred.Host, "blocked", "a credential other than the bottle's own")
			http.Error(w, "claude-bottle: only the bottle's own credential may be sent to "+cred.Host, http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r)
	})
}

// dialInspected opens a tunnel through pipelock to target (host:port) and speaks TLS in it; if pipelock
// refuses, its answer is returned instead.
func (g *gate) dialInspected(target string) (net.Conn, *http.Response, error) {
	conn, err := net.DialTimeout("tcp", g.pipelock, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(conn, connectRequest(target))
	reader := bufio.NewReader(conn)
	refusal, err := tunnelAnswer(reader)
	if err != nil || refusal != nil {
		conn.Close()
		return nil, refusal, err
	}
	host, _, _ := net.SplitHostPort(target)
	config := g.inspectTLS.Clone()
	config.ServerName = host
	tlsConn := tls.Client(&bufferedConn{conn, reader}, config)
	if err := tlsConn.Handshake(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	conn.SetDeadline(time.Time{})
	return tlsConn, nil, nil
}

// tunnels are the gate's tunnels through pipelock to one inspected target, shared by all of the bottle's
// connections to it (a sidecar serves one bottle). Over HTTP/2, which pipelock speaks once it has ended the
// TLS, one tunnel carries every request at once; a new connection from the bottle then costs no CONNECT and
// no TLS handshake with pipelock.
type tunnels struct {
	handler   http.Handler
	transport *http.Transport
	mu        sync.Mutex
	spare     net.Conn // a tunnel pipelock opened to judge the target, for the transport's next dial
	opened    bool     // pipelock has let a tunnel to the target through
	born      time.Time
}

// How long a target's tunnels take new requests: pipelock ends a tunnel after max_tunnel_seconds (6 h)
// with every request on it, so an answer that starts late in a tunnel's life would be cut; after this,
// new requests go on new tunnels (and pipelock judges the target again) while older ones finish.
var tunnelLife = time.Hour

// Inspected requests in flight at once, over all targets: over HTTP/2 the gate holds up to 4 MB of each
// answer the bottle does not read (in HTTP/1.1 it waited in the kernel), so a bottle that asks for many
// and reads none would otherwise grow the gate past the sidecar's memory. The rest wait their turn.
const inspectedInFlight = 64

// Targets whose tunnels are kept at once: past that (an agent walking a wildcard domain's names), the gate
// lets the idle ones go and starts over; connections in progress keep theirs.
const keptTargets = 256

func (g *gate) tunnelsTo(target string) *tunnels {
	g.tunnelsMu.Lock()
	defer g.tunnelsMu.Unlock()
	if t, ok := g.tunnels[target]; ok {
		if time.Since(t.born) < tunnelLife {
			return t
		}
		t.transport.CloseIdleConnections()
	}
	if len(g.tunnels) >= keptTargets {
		for _, old := range g.tunnels {
			old.transport.CloseIdleConnections()
		}
		g.tunnels = map[string]*tunnels{}
	}
	t := g.newTunnels(target)
	g.tunnels[target] = t
	return t
}

func (t *tunnels) judged() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.opened
}

// offer keeps `conn` (a tunnel just opened, which judged the target) for the next dial; one is enough. It
// lasts no longer than the connection that opened it (drop), as each connection's own tunnel did before.
func (t *tunnels) offer(conn net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.opened = true
	if t.spare != nil {
		conn.Close()
		return
	}
	t.spare = conn
}

// drop closes conn if it is still the spare: the connection that opened it ended without a request.
func (t *tunnels) drop(conn net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.spare == conn {
		t.spare = nil
		conn.Close()
	}
}

func (t *tunnels) takeSpare() net.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	conn := t.spare
	t.spare = nil
	return conn
}

func (g *gate) newTunnels(target string) *tunnels {
	t := &tunnels{born: time.Now()}
	t.transport = &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if conn := t.takeSpare(); conn != nil {
				return conn, nil
			}
			conn, refused, err := g.dialInspected(target)
			if refused != nil {
				return nil, refusal(fmt.Sprintf("pipelock refused %s: %s", target, refused.Status))
			}
			return conn, err
		},
		ForceAttemptHTTP2:   true, // the tunnels' TLS offers h2 (inspectTLS); HTTP/1.1 if pipelock would not
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	// As a client names it: the Host header carries no default port.
	proxy := g.reverseProxy(&url.URL{Scheme: "https", Host: strings.TrimSuffix(target, ":443")})
	proxy.Transport = t.transport
	t.handler = g.scanned(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.inFlight <- struct{}{}
		defer func() { <-g.inFlight }()
		proxy.ServeHTTP(w, r)
	}), hostOf(target))
	return t
}

// scanned refuses a request that carries a secret of the bottle's, reading its body as it goes on.
func (g *gate) scanned(next http.Handler, target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// In a tunnel the request goes to the tunnel's target whatever host it names: the report says so.
		host := target
		if host == "" {
			host = r.Host
			if r.URL.Host != "" {
				host = r.URL.Host
			}
		}
		if why := g.scanner.refusedRequest(r); why != "" {
			g.counter.add(host, "blocked", why)
			http.Error(w, "claude-bottle: blocked: "+why, http.StatusForbidden)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &scannedBody{src: r.Body, scanner: g.scanner}
		}
		next.ServeHTTP(w, r)
	})
}

// reverseProxy forwards through pipelock, streaming answers as they come (server-sent events).
func (g *gate) reverseProxy(to *url.URL) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Director: func(r *http.Request) {
			if to != nil {
				r.URL.Scheme, r.URL.Host, r.Host = to.Scheme, to.Host, to.Host
			}
			if r.Body != nil && r.ContentLength > 0 {
				r.Body = &declaredBody{ReadCloser: r.Body, left: r.ContentLength}
			}
			r.Header.Del("Proxy-Connection")
			r.Header.Del("Proxy-Authorization")
			// No scanner reads a request's trailers, and nothing the bottle runs needs them.
			r.Header.Del("Trailer")
			r.Trailer = nil
		},
		Transport:     g.upstream,
		FlushInterval: -1,
		ErrorLog:      quietLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var refused refusal
			var blocked blockedBody
			if errors.As(err, &blocked) {
				g.counter.add(r.URL.Hostname(), "blocked", err.Error())
				http.Error(w, "claude-bottle: blocked: "+err.Error(), http.StatusForbidden)
				return
			}
			if errors.As(err, &refused) {
				http.Error(w, "claude-bottle: "+err.Error(), http.StatusBadGateway)
				return
			}
			http.Error(w, "claude-bottle: the sidecar could not reach "+r.URL.Host+": "+err.Error(), http.StatusBadGateway)
		},
	}
}

// declaredBody ends a request body at its declared length without reading past it. The server discards and
// closes a request's body as soon as the answer's header goes out; an upstream that answers the moment the
// last byte arrives can send that header before the transport has made its one read past the length, which
// then fails, and the transport drops the connection with the answer half read.
type declaredBody struct {
	io.ReadCloser
	left int64
}

func (b *declaredBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func refuse(conn net.Conn, why string) {
	body := "claude-bottle: " + why + "\n"
	fmt.Fprintf(conn, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		len(body), body)
	conn.Close()
}

// oneConnListener hands one connection to an http.Server, then reports itself closed once that
// connection is.
type oneConnListener struct {
	conn net.Conn
	once sync.Once
	done chan struct{}
}

func newOneConnListener(conn net.Conn) *oneConnListener {
	return &oneConnListener{conn: &closeNotifyConn{Conn: conn}, done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var conn net.Conn
	l.once.Do(func() {
		conn = l.conn
		l.conn.(*closeNotifyConn).onClose = func() { close(l.done) }
	})
	if conn != nil {
		return conn, nil
	}
	<-l.done
	return nil, errors.New("connection closed")
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type closeNotifyConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

func (c *closeNotifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// canonicalTarget reads a CONNECT target as one host (lower case, without a final dot; an IPv6 address
// without its brackets) and port, or fails: brackets around anything but an IPv6 address, an empty or
// non-numeric port, or a character no host name has.
func canonicalTarget(authority string) (host, port string, ok bool) {
	h, p, err := net.SplitHostPort(strings.ToLower(authority))
	if err != nil || p == "" || len(p) > 5 || strings.Trim(p, "0123456789") != "" {
		return "", "", false
	}
	if ip := net.ParseIP(h); ip != nil {
		if strings.HasPrefix(authority, "[") != (ip.To4() == nil) {
			return "", "", false // [1.2.3.4]:443, or a bare IPv6 address
		}
		return ip.String(), p, true
	}
	if strings.HasPrefix(authority, "[") {
		return "", "", false
	}
	h = strings.TrimSuffix(h, ".") // the root's dot; a second one ("name..") is no spelling of the name
	if h == "" || strings.HasSuffix(h, ".") || strings.Contains(h, "..") ||
		strings.Trim(h, "abcdefghijklmnopqrstuvwxyz0123456789.-_") != "" {
		return "", "", false
	}
	return h, p, true
}

// matchesHost says whether host is one of patterns, an exact name or a "*." wildcard for its subdomains
// (as pipelock matches its passthrough domains).
func matchesHost(host string, patterns []string) bool {
	for _, pattern := range patterns {
		pattern = strings.ToLower(pattern)
		if pattern == host || (strings.HasPrefix(pattern, "*.") && strings.HasSuffix(host, pattern[1:])) {
			return true
		}
	}
	return false
}
