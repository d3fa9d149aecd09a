package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// pipelock's JSON log lines, as the pinned release writes them.
var lines = []string{
	`{"level":"info","component":"pipelock","event":"startup","listen":"127.0.0.1:8888","mode":"strict"}`,
	`{"level":"info","component":"pipelock","event":"tunnel_open","target":"registry.npmjs.org:443","message":"tunnel opened"}`,
	`{"level":"info","component":"pipelock","event":"tunnel_close","target":"registry.npmjs.org:443","total_bytes":22476}`,
	`{"level":"info","component":"pipelock","event":"forward_http","method":"GET","url":"http://registry.npmjs.org/is-number","status_code":404}`,
	`{"level":"warn","component":"pipelock","event":"anomaly","method":"CONNECT","target":"pypi.org:443","scanner":"tls_intercept","reason":"TLS MITM interception active","score":0}`,
	`{"level":"warn","component":"pipelock","event":"blocked","method":"CONNECT","target":"dk-abcdef0123456789.registry.npmjs.org:443","scanner":"allowlist","reason":"domain not in allowlist: dk-abcdef0123456789.registry.npmjs.org"}`,
	`{"level":"warn","component":"pipelock","event":"blocked","method":"GET","url":"http://registry.npmjs.org/is-number?k=[redacted]","scanner":"dlp","reason":"known secret leak detected"}`,
	`{"level":"warn","component":"pipelock","event":"blocked","method":"CONNECT","target":"[2001:db8::1]:443","scanner":"ssrf","reason":"ssrf: internal address"}`,
	`{"level":"warn","component":"pipelock","event":"blocked","target":"10.0.0.5:8080","scanner":"ssrf","reason":"ssrf: internal address"}`,
	`not json at all`,
}

func TestCountsPerHostDecisionAndReasonWithSecretsRedacted(t *testing.T) {
	c := newCounter([]string{"DK-AbCdEf0123456789", "x"})
	c.read(strings.NewReader(strings.Join(lines, "\n")))
	var report struct {
		Rows   []row `json:"rows"`
		Folded int   `json:"folded"`
	}
	if err := json.Unmarshal(c.snapshot(), &report); err != nil {
		t.Fatal(err)
	}
	want := []row{
		{key{"registry.npmjs.org", "allowed", "allowed"}, 2},
		{key{"10.0.0.5:8080", "blocked", "ssrf: internal address"}, 1},
		{key{"2001:db8::1", "blocked", "ssrf: internal address"}, 1},
		{key{"[secret].registry.npmjs.org", "blocked", "allowlist: domain not in allowlist: [secret].registry.npmjs.org"}, 1},
		{key{"pypi.org", "allowed", "allowed, looked inside"}, 1},
		{key{"registry.npmjs.org", "blocked", "dlp: known secret leak detected"}, 1},
	}
	if !reflect.DeepEqual(report.Rows, want) || report.Folded != 0 {
		t.Errorf("got %+v folded %d", report.Rows, report.Folded)
	}
}

func TestAFloodOfHostsFoldsButNeverStopsCountingNorHidesWhatFollows(t *testing.T) {
	c := newCounter(nil)
	c.add("busy.example", "allowed", "allowed")
	c.add("busy.example", "allowed", "allowed")
	flood := 3*maxKeys + 17
	for i := 0; i < flood; i++ {
		host := fmt.Sprintf("h%d.flood.example", i)
		c.add(host, "blocked", "allowlist: domain not in allowlist: "+host)
	}
	c.add("after.example", "blocked", "dlp: known secret leak detected")
	total := 0
	for _, n := range c.counts {
		total += n
	}
	if total != flood+3 || len(c.counts) > maxKeys {
		t.Errorf("total %d, %d rows", total, len(c.counts))
	}
	if c.counts[key{"busy.example", "allowed", "allowed"}] != 2 ||
		c.counts[key{"after.example", "blocked", "dlp: known secret leak detected"}] != 1 ||
		c.counts[key{otherHosts, "blocked", "allowlist"}] == 0 || c.folded == 0 {
		t.Errorf("rows after the flood: %d folded, busy %d, after %d", c.folded,
			c.counts[key{"busy.example", "allowed", "allowed"}],
			c.counts[key{"after.example", "blocked", "dlp: known secret leak detected"}])
	}
}

func TestAReportAskedForRightAfterARequestIncludesIt(t *testing.T) {
	c := newCounter(nil)
	path := filepath.Join(t.TempDir(), "report.sock")
	if err := serveReports(c, path); err != nil {
		t.Fatal(err)
	}
	c.add("example.com", "blocked", "not allowed")
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(conn)
	conn.Close()
	if err != nil || !strings.Contains(string(data), `"host":"example.com"`) {
		t.Fatalf("the report missed the request just counted: %s (%v)", data, err)
	}
}
