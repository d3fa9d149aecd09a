package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

const testSecret = "Zq8vT3kLm9PxW2rYb7NcJ4hGd6FsQ1aE"

// readBody reads body through a scannedBody, `chunk` bytes at a time at most, from a source that gives
// one byte or half of what is asked at a time: a secret split over reads anywhere.
func readBody(t *testing.T, body string, chunk int) (string, error) {
	t.Helper()
	src := io.NopCloser(iotest.HalfReader(strings.NewReader(body)))
	if chunk == 1 {
		src = io.NopCloser(iotest.OneByteReader(strings.NewReader(body)))
	}
	return drain(&scannedBody{src: src, scanner: newSecretScanner([]string{testSecret})}, chunk)
}

func TestABodyIsPassedOnWholeWhenItCarriesNoSecret(t *testing.T) {
	body := strings.Repeat("some text, no secret; ", 5000)
	for _, chunk := range []int{1, 7, 4096, 1 << 20} {
		got, err := readBody(t, body, chunk)
		if err != nil || got != body {
			t.Fatalf("chunk %d: %d bytes, error %v; want the whole %d", chunk, len(got), err, len(body))
		}
	}
}

func TestASecretAnywhereInABodyIsRefusedBeforeAnyOfItLeaves(t *testing.T) {
	shapes := map[string]string{
		"JSON, duplicated key":   `{"a":"` + testSecret + `","a":"x"}`,
		"JSON, 70 deep":          strings.Repeat("[", 70) + `"` + testSecret + `"` + strings.Repeat("]", 70),
		"multipart preamble":     testSecret + "\r\n--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--b--\r\n",
		"multipart epilogue":     "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--b--\r\n" + testSecret,
		"multipart header name":  "--b\r\n" + testSecret + ": 1\r\n\r\nv\r\n--b--\r\n",
		"other case":             "x=" + strings.ToUpper(testSecret),
		"hex":                    "x=" + hex.EncodeToString([]byte(testSecret)),
		"after 1 MB":             strings.Repeat("a", 1<<20) + testSecret,
		"across a read boundary": strings.Repeat("a", 32<<10-5) + testSecret,
	}
	for name, body := range shapes {
		for _, chunk := range []int{1, 13, 32 << 10} {
			got, err := readBody(t, body, chunk)
			if !errors.Is(err, errSecretInBody) && !errors.Is(err, errPiecesInBody) {
				t.Errorf("%s (reads of %d): error %v, want the secret refused", name, chunk, err)
			}
			// Not even the secret's first byte went on.
			if idx := strings.Index(strings.ToLower(body), strings.ToLower(testSecret)); idx >= 0 && len(got) > idx {
				t.Errorf("%s (reads of %d): %d bytes passed on, the secret starts at %d", name, chunk, len(got), idx)
			}
		}
	}
}

func TestASecretInTheMethodTargetHeadersOrTrailersIsRefused(t *testing.T) {
	s := newSecretScanner([]string{testSecret})
	for name, build := range map[string]func(r *http.Request){
		"method":       func(r *http.Request) { r.Method = testSecret },
		"odd method":   func(r *http.Request) { r.Method = "PROPX" },
		"query":        func(r *http.Request) { r.RequestURI = "/x?k=" + testSecret },
		"header value": func(r *http.Request) { r.Header.Set("User-Agent", testSecret) },
		"header name":  func(r *http.Request) { r.Header.Set("X-"+testSecret, "1") },
		"trailer name": func(r *http.Request) { r.Trailer = http.Header{"X-" + testSecret: nil} },
	} {
		r := httptest.NewRequest("GET", "https://allowed.test/x", nil)
		build(r)
		if why := s.refusedRequest(r); why == "" {
			t.Errorf("%s: not refused", name)
		} else if strings.Contains(strings.ToLower(why), strings.ToLower(testSecret)) {
			t.Errorf("%s: the refusal repeats the secret: %s", name, why)
		}
	}
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		r := httptest.NewRequest(method, "https://allowed.test/x?q=1", nil)
		r.Header.Set("User-Agent", "curl/8")
		if why := s.refusedRequest(r); why != "" {
			t.Errorf("%s without a secret refused: %s", method, why)
		}
	}
}

func TestACONNECTTargetHasOneSpelling(t *testing.T) {
	for authority, want := range map[string]string{
		"api.anthropic.com:443":     "api.anthropic.com:443",
		"API.Anthropic.COM:443":     "api.anthropic.com:443",
		"api.anthropic.com.:443":    "api.anthropic.com:443",
		"172.18.0.1:7443":           "172.18.0.1:7443",
		"[::1]:443":                 "[::1]:443",
		"[api.anthropic.com]:443":   "",
		"[172.18.0.1]:7443":         "",
		"::1:443":                   "",
		"[::ffff:172.18.0.1]:7443":  "",
		"api.anthropic.com":         "",
		"api.anthropic.com:":        "",
		"api.anthropic.com:+443":    "",
		"api.anthropic.com:4430000": "",
		"api..anthropic.com:443":    "",
		"api.anthropic.com\x1b:443": "",
		"a b:443":                   "",
		".:443":                     "",
		"api.anthropic.com..:443":   "", // one dot is the root's; two would pass the credential hosts' rules by
		"db.internal..:8443":        "",
	} {
		host, port, ok := canonicalTarget(authority)
		got := ""
		if ok {
			got = host + ":" + port
			if strings.Contains(host, ":") {
				got = "[" + host + "]:" + port
			}
		}
		if got != want {
			t.Errorf("canonicalTarget(%q) = %q, want %q", authority, got, want)
		}
	}
}

func TestOnlyOneCredentialHeaderMayGoToTheAPI(t *testing.T) {
	var forwarded int
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { forwarded++ }))
	defer upstream.Close()
	host, port := splitURL(t, upstream.URL)
	cfg := &Config{Credentials: []CredentialHost{{Host: host, Port: port, Paths: []string{"/"}, Inject: true}},
		PrivatePorts: map[string][]string{host: {}}, Token: "real", Placeholder: "placeholder"}
	g := newGate(cfg, nil, newCounter(nil), nil)
	for name, headers := range map[string][][2]string{
		"two X-Api-Key":       {{"X-Api-Key", ""}, {"X-Api-Key", "sk-ant-api03-attacker"}},
		"two Authorization":   {{"Authorization", ""}, {"Authorization", "Bearer sk-ant-api03-attacker"}},
		"placeholder and key": {{"Authorization", "Bearer placeholder"}, {"X-Api-Key", ""}, {"X-Api-Key", "k"}},
	} {
		r := httptest.NewRequest("POST", upstream.URL+"/v1/messages", strings.NewReader("{}"))
		for _, h := range headers {
			r.Header.Add(h[0], h[1])
		}
		w := httptest.NewRecorder()
		g.forwardPlain(w, r)
		if w.Code != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", name, w.Code)
		}
	}
	if forwarded != 0 {
		t.Errorf("%d requests reached the API", forwarded)
	}
	r := httptest.NewRequest("POST", upstream.URL+"/v1/messages", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer placeholder")
	w := httptest.NewRecorder()
	g.forwardPlain(w, r)
	if w.Code != http.StatusOK || forwarded != 1 {
		t.Errorf("the bottle's own credential: status %d, forwarded %d", w.Code, forwarded)
	}
}

func splitURL(t *testing.T, u string) (string, string) {
	t.Helper()
	hostport := strings.TrimPrefix(u, "http://")
	i := strings.LastIndex(hostport, ":")
	return hostport[:i], hostport[i+1:]
}

func TestAPlainRequestWithASecretIsRefusedAndItsTrailersDropped(t *testing.T) {
	var got []string
	var mu sync.Mutex
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, string(body)+"|"+r.Trailer.Get("X-Leak"))
		mu.Unlock()
	}))
	defer upstream.Close()
	host, port := splitURL(t, upstream.URL)
	// The upstream stands in for a plain-HTTP gateway, which the gate reaches without pipelock.
	cfg := &Config{Credentials: []CredentialHost{{Host: host, Port: port, Paths: []string{"/"}, Inject: false}},
		PrivatePorts: map[string][]string{host: {}}, Placeholder: "placeholder", Secrets: []string{testSecret}}
	g := newGate(cfg, nil, newCounter(nil), nil)
	inner := g.reverseProxy(&url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)})
	inner.Transport = g.direct
	handler := g.scanned(inner, "")
	for name, body := range map[string]string{"clean": "hello", "secret": "--b\r\n" + testSecret + ": 1\r\n"} {
		r := httptest.NewRequest("POST", upstream.URL+"/x", strings.NewReader(body))
		r.Trailer = http.Header{"X-Leak": {"trailer value"}}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if want := map[string]int{"clean": 200, "secret": 403}[name]; w.Code != want {
			t.Errorf("%s: status %d, want %d (%s)", name, w.Code, want, w.Body.String())
		}
	}
	// The refused request's headers may have gone ahead of its body (which is read as it goes on), but not a
	// byte of the body before the secret, nor the secret. Its handler may still be running: Close waits for it.
	upstream.Close()
	mu.Lock()
	defer mu.Unlock()
	clean := 0
	for _, r := range got {
		if r == "hello|" {
			clean++
		} else if r != "|" {
			t.Errorf("the upstream received %q", r)
		}
	}
	if clean != 1 {
		t.Errorf("the upstream received %q, want the clean body once, without its trailer", got)
	}
}

func TestARefusalInATunnelIsReportedUnderTheTunnelsTarget(t *testing.T) {
	counter := newCounter([]string{testSecret})
	g := newGate(&Config{Secrets: []string{testSecret}}, nil, counter, nil)
	forward := g.tunnelsTo("pypi.org:443").handler
	// The request names another host; inside a tunnel to pypi.org it could only go to pypi.org.
	r := httptest.NewRequest("GET", "https://api.anthropic.com/x?k="+testSecret, nil)
	w := httptest.NewRecorder()
	forward.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Fatalf("status %d, want 403", w.Code)
	}
	report := string(counter.snapshot())
	if !strings.Contains(report, `"host":"pypi.org","decision":"blocked"`) || strings.Contains(report, "anthropic") {
		t.Errorf("report: %s", report)
	}
}

// pipelock refuses a compressed body by the first Content-Encoding header alone, and no scanner reads one.
func TestACompressedBodyIsRefusedHoweverItIsDeclared(t *testing.T) {
	s := newSecretScanner([]string{testSecret})
	for name, codings := range map[string][]string{
		"gzip":               {"gzip"},
		"identity then gzip": {"identity", "gzip"},
		"a list":             {"identity, gzip"},
		"upper case":         {"GZIP"},
		"br":                 {"br"},
		"empty then deflate": {"", "deflate"},
	} {
		r := httptest.NewRequest("POST", "https://allowed.test/x", strings.NewReader("x"))
		for _, c := range codings {
			r.Header.Add("Content-Encoding", c)
		}
		if why := s.refusedRequest(r); why == "" {
			t.Errorf("%s: not refused", name)
		}
	}
	r := httptest.NewRequest("POST", "https://allowed.test/x", strings.NewReader("x"))
	r.Header.Set("Content-Encoding", "identity")
	if why := s.refusedRequest(r); why != "" {
		t.Errorf("identity refused: %s", why)
	}
}

// A long secret (a service account's key file on one line) makes a long hold-back, which each scan reads again:
// a body is still scanned about once over, and the secret at its end is still refused.
func TestALongSecretDoesNotMakeABodyScannedManyTimesOver(t *testing.T) {
	long := strings.Repeat("Zq8vT3kLm9PxW2rYb7NcJ4hGd6FsQ1aE", 64) // 2 KB
	s := newSecretScanner([]string{long})
	body := strings.Repeat("ordinary text, ", 1<<20/15)
	b := &scannedBody{src: chunked(body, 1500), scanner: s}
	if _, err := drain(b, 32<<10); err != nil {
		t.Fatal(err)
	}
	if b.scanned > 3*len(body) {
		t.Errorf("a body of %d bytes was scanned %.1f times over", len(body), float64(b.scanned)/float64(len(body)))
	}
	if _, err := drain(&scannedBody{src: chunked(body+long, 1500), scanner: s}, 32<<10); err != errSecretInBody {
		t.Errorf("the long secret at the end: %v", err)
	}
}

// A secret's characters spread through one body, further apart than the body holds back, are refused before
// the last of them goes on (at most all but a piece's worth goes on, as with pieces over requests).
func TestASecretSpreadThroughABodyIsRefused(t *testing.T) {
	for _, gap := range []int{100, 2 << 10, 10 << 10, 100 << 10} {
		var body strings.Builder
		for _, c := range testSecret {
			body.WriteRune(c)
			body.WriteString(strings.Repeat(" ", gap))
		}
		// And its hex, a byte at a time as far apart.
		var spreadHex strings.Builder
		for _, c := range []byte(testSecret) {
			fmt.Fprintf(&spreadHex, "%02x%s", c, strings.Repeat(" ", gap))
		}
		b := &scannedBody{src: chunked(spreadHex.String(), 32<<10), scanner: newSecretScanner([]string{testSecret})}
		if got, err := drain(b, 32<<10); err == nil {
			t.Errorf("hex, gap %d: the body went on", gap)
		} else if sent := len(strings.ReplaceAll(got, " ", "")); sent >= 2*len(testSecret) {
			t.Errorf("hex, gap %d: all of it went on", gap)
		}
		for _, chunk := range []int{1500, 32 << 10} {
			b := &scannedBody{src: chunked(body.String(), chunk), scanner: newSecretScanner([]string{testSecret})}
			got, err := drain(b, 32<<10)
			if err == nil {
				t.Errorf("gap %d, reads of %d: the body went on", gap, chunk)
				continue
			}
			if sent := len(strings.ReplaceAll(got, " ", "")); sent > len(testSecret)-6 {
				t.Errorf("gap %d, reads of %d: %d of the secret's %d characters went on", gap, chunk, sent, len(testSecret))
			}
		}
	}
}
