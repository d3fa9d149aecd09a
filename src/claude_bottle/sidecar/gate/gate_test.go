package main

import (
	"context"
	"encoding/base32"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTheDirectDialerKeepsTheSSRFRule(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d := &net.Dialer{Timeout: 2 * time.Second}
	for _, tc := range []struct {
		listed map[string][]string
		ok     bool
	}{
		{map[string][]string{}, false},
		{map[string][]string{"10.0.0.1": {}}, false},
		{map[string][]string{"127.0.0.1": {}}, true},
		{map[string][]string{"localhost": {"1"}}, false}, // the name is not the address dialed
	} {
		g := &gate{cfg: &Config{PrivatePorts: tc.listed}}
		c, err := g.dialPublicOrListed(d)(context.Background(), "tcp", l.Addr().String())
		if tc.ok != (err == nil) {
			t.Errorf("listed %v: dial error %v, want ok=%v", tc.listed, err, tc.ok)
		}
		if err == nil {
			c.Close()
		} else if !tc.ok && !strings.Contains(err.Error(), "egress.private_hosts") {
			t.Errorf("the refusal should say what to do: %v", err)
		}
	}
}

func TestPrivateRanges(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1": true, "10.1.2.3": true, "172.17.0.1": true,
		"192.168.1.1": true, "169.254.169.254": true, "100.64.0.1": true, "::1": true, "fd00::1": true,
		"fe80::1": true, "::ffff:10.0.0.1": true, "8.8.8.8": false, "2001:db8::1": false, "172.32.0.1": false} {
		if got := isPrivate(net.ParseIP(addr)); got != want {
			t.Errorf("isPrivate(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestTheTokensPathsCannotBeWalkedOutOf(t *testing.T) {
	prefixes := []string{"/v1/messages", "/api/claude_code/"}
	for raw, want := range map[string]bool{
		"/v1/messages":                   true,
		"/v1/messages?beta=true":         true,
		"/api/claude_code/settings":      true,
		"/v1/files":                      false,
		"/v1/messages/../files":          false,
		"/v1/messages/%2e%2e/files":      false,
		"/v1/messages/..%2Ffiles":        false,
		"/v1/messages/.%2e/files":        false,
		"/v1/messages/./x":               false,
		"/api/claude_code/%5c..%5cfoo":   false,
		"/api/claude_code/a%2fb":         false,
		"/api/claude_code/..":            false,
		"/v1/messages%2f..%2f..%2ffiles": false,
	} {
		u, err := url.Parse("https://api.anthropic.com" + raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := allowedPath(prefixes, u); got != want {
			t.Errorf("allowedPath(%q) = %v, want %v", raw, got, want)
		}
	}
}

func TestPlainRequestsForHTTPSAndCredentialHostsOnOtherPortsAreRefused(t *testing.T) {
	cfg := &Config{Credentials: []CredentialHost{{Host: "api.anthropic.com", Port: "443", TLS: true,
		Paths: []string{"/v1/messages"}, Inject: true}}, Token: "real", Placeholder: "placeholder"}
	g := newGate(cfg, nil, newCounter(nil), nil)
	for _, target := range []string{"https://api.anthropic.com/v1/files", "https://pypi.org/simple/",
		"HTTPS://example.com/", "ftp://example.com/x", "http://api.anthropic.com:8443/v1/messages",
		"http://api.anthropic.com/v1/messages"} {
		r := httptest.NewRequest("GET", target, nil)
		r.Header.Set("Authorization", "Bearer placeholder")
		w := httptest.NewRecorder()
		g.forwardPlain(w, r)
		if w.Code != http.StatusBadRequest && w.Code != http.StatusForbidden {
			t.Errorf("%s: status %d, want a refusal", target, w.Code)
		}
	}
	if why := g.credentialPortRefused("api.anthropic.com", "8443"); !strings.Contains(why, "port 443 only") {
		t.Errorf("CONNECT to another port of the API: %q", why)
	}
	if why := g.credentialPortRefused("API.anthropic.com", "443"); why != "" {
		t.Errorf("the API's own port: %q", why)
	}
	if why := g.credentialPortRefused("pypi.org", "8443"); why != "" {
		t.Errorf("another host: %q", why)
	}
}

// closedAfter is a request body as the server holds it once the answer's header went out: its declared bytes,
// then closed.
type closedAfter struct{ data *strings.Reader }

func (b *closedAfter) Read(p []byte) (int, error) {
	if b.data.Len() == 0 {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.data.Read(p)
}

func (b *closedAfter) Close() error { return nil }

func TestAnAnswerIsWholeWhenTheRequestBodyIsClosedAfterItsLength(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "scripted failure", http.StatusBadRequest)
	}))
	defer upstream.Close()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(upstream.URL, "http://"))
	cfg := &Config{Credentials: []CredentialHost{{Host: host, Port: port, Paths: []string{"/"}, Inject: true}},
		PrivatePorts: map[string][]string{host: {}}, Token: "real", Placeholder: "placeholder"}
	g := newGate(cfg, nil, newCounter(nil), nil)
	body := `{"pad":"` + strings.Repeat("x", 100_000) + `"}`
	for i := 0; i < 20; i++ {
		r := httptest.NewRequest("POST", upstream.URL+"/v1/messages", &closedAfter{strings.NewReader(body)})
		r.ContentLength = int64(len(body))
		r.Header.Set("Authorization", "Bearer placeholder")
		w := httptest.NewRecorder()
		g.forwardPlain(w, r)
		if w.Code != http.StatusBadRequest || w.Body.String() != "scripted failure\n" {
			t.Fatalf("request %d: %d %q, want the upstream's whole 400", i, w.Code, w.Body.String())
		}
	}
}

// A secret spelled out in host names (base32 in the labels of an allowed wildcard domain), whole or a piece per
// name, is refused at the CONNECT, before the name is looked up or sent anywhere.
func TestASecretInACONNECTTargetsNameIsRefused(t *testing.T) {
	counter := newCounter([]string{testSecret})
	g := newGate(&Config{Secrets: []string{testSecret}}, nil, counter, nil)
	connect := func(host string) string {
		client, server := net.Pipe()
		defer client.Close()
		go g.handle(server)
		client.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(client, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host)
		answer, _ := io.ReadAll(client)
		return string(answer)
	}
	encoded := strings.ToLower(strings.TrimRight(base32.StdEncoding.EncodeToString([]byte("k="+testSecret)), "="))
	whole := strings.Join([]string{encoded[:30], encoded[30:]}, ".") + ".files.example.com"
	if answer := connect(whole); !strings.Contains(answer, "carries a secret") {
		t.Errorf("the whole secret in a name: %q", answer)
	}
	half := len(testSecret) / 2
	connect(strings.ToLower(testSecret[:half]) + ".files.example.com")
	if answer := connect(strings.ToLower(testSecret[half:]) + ".files.example.com"); !strings.Contains(answer, "in pieces") {
		t.Errorf("the second half in a second name: %q", answer)
	}
	report := string(counter.snapshot())
	if strings.Contains(strings.ToLower(report), strings.ToLower(testSecret[half:])) || strings.Contains(report, encoded[30:]) {
		t.Errorf("the report shows the name: %s", report)
	}
	if !strings.Contains(report, `"host":"[secret].files.example.com"`) {
		t.Errorf("the report does not say where: %s", report)
	}
}
