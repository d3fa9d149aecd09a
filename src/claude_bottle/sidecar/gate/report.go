package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// quietLog swallows net/http's own log lines: they would go to Docker's on-disk logs.
var quietLog = log.New(io.Discard, "", 0)

// maxKeys bounds what the report remembers. When it is full, the rows seen only once are counted together
// under "(other hosts)" (per decision and kind of reason), which makes room again: an agent that asks for a
// million made-up host names can neither exhaust the sidecar's memory nor hide what comes after, and every
// request stays counted.
const maxKeys = 4096

type key struct {
	Host     string `json:"host"`
	Decision string `json:"decision"` // allowed, blocked or warned
	Reason   string `json:"reason"`
}

type row struct {
	key
	Count int `json:"count"`
}

// counter counts what pipelock (and the gate) decided, per host, decision and reason.
type counter struct {
	mu      sync.Mutex
	counts  map[key]int
	folded  int // requests counted under "(other hosts)" once maxKeys was reached
	changed bool
	secrets []string
}

func newCounter(secrets []string) *counter {
	var kept []string
	for _, s := range secrets {
		if s = strings.TrimSpace(s); len(s) >= 4 {
			kept = append(kept, strings.ToLower(s))
		}
	}
	sort.Slice(kept, func(i, j int) bool { return len(kept[i]) > len(kept[j]) })
	return &counter{counts: map[key]int{}, secrets: kept}
}

// redact hides the bottle's secret values (an agent can put one into a host name it asks for).
func (c *counter) redact(text string) string {
	lower := strings.ToLower(text)
	for _, secret := range c.secrets {
		for {
			i := strings.Index(lower, secret)
			if i < 0 {
				break
			}
			text = text[:i] + "[secret]" + text[i+len(secret):]
			lower = lower[:i] + "[secret]" + lower[i+len(secret):]
		}
	}
	return text
}

func (c *counter) add(host, decision, reason string) {
	k := key{c.redact(host), decision, c.redact(reason)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, known := c.counts[k]; !known && len(c.counts) >= maxKeys {
		c.compact()
	}
	c.counts[k]++
	c.changed = true
}

// compact folds the half of the rows seen least often into "(other hosts)" rows, one per decision and kind
// of reason: counts are kept, and rows with real traffic stay apart.
func (c *counter) compact() {
	rows := make([]row, 0, len(c.counts))
	for k, n := range c.counts {
		if k.Host != otherHosts {
			rows = append(rows, row{k, n})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Count < rows[j].Count })
	for _, r := range rows[:len(rows)/2] {
		kind := r.Reason
		if i := strings.Index(kind, ":"); i >= 0 {
			kind = kind[:i]
		}
		delete(c.counts, r.key)
		c.counts[key{otherHosts, r.Decision, kind}] += r.Count
		c.folded += r.Count
	}
}

const otherHosts = "(other hosts)"

// read turns pipelock's JSON log lines into counts.
func (c *counter) read(r io.Reader) {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		var entry map[string]interface{}
		if json.Unmarshal(scanner.Bytes(), &entry) != nil {
			continue
		}
		str := func(name string) string { s, _ := entry[name].(string); return s }
		target := str("target")
		if target == "" {
			target = str("url")
		}
		switch event := str("event"); {
		case event == "tunnel_open" || event == "forward_http":
			c.add(hostOf(target), "allowed", "allowed")
		case event == "anomaly" && str("scanner") == "tls_intercept":
			c.add(hostOf(target), "allowed", "allowed, looked inside")
		case event == "anomaly":
			c.add(hostOf(target), "warned", str("scanner")+": "+str("reason"))
		case event == "blocked" || event == "ws_blocked" || event == "sni_mismatch":
			reason, scanner := str("reason"), str("scanner")
			if reason == "" {
				reason = event
			}
			if scanner != "" && !strings.HasPrefix(reason, scanner) {
				reason = scanner + ": " + reason
			}
			c.add(hostOf(target), "blocked", reason)
		case str("action") == "warn" || strings.HasSuffix(event, "_warn"):
			c.add(hostOf(target), "warned", event+": "+str("reason"))
		}
	}
}

// hostOf turns api.anthropic.com:443 or https://x.org/path into the host (with a port other than 443/80).
func hostOf(target string) string {
	if strings.Contains(target, "://") {
		if u, err := url.Parse(target); err == nil {
			target = u.Host
		}
	}
	if host, port, err := net.SplitHostPort(target); err == nil {
		if port == "443" || port == "80" {
			return host
		}
		return net.JoinHostPort(host, port)
	}
	if target == "" {
		return "?"
	}
	return target
}

func (c *counter) snapshot() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	rows := make([]row, 0, len(c.counts))
	for k, n := range c.counts {
		rows = append(rows, row{k, n})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Count != rows[j].Count {
			return rows[i].Count > rows[j].Count
		}
		return rows[i].Host < rows[j].Host
	})
	data, _ := json.Marshal(map[string]interface{}{"rows": rows, "folded": c.folded})
	return data
}

func (c *counter) flush(path string) {
	c.mu.Lock()
	c.changed = false
	c.mu.Unlock()
	writeFile(path, c.snapshot(), 0o600)
}

func (c *counter) keepWriting(path string) {
	c.flush(path)
	for range time.Tick(250 * time.Millisecond) {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if changed {
			c.flush(path)
		}
	}
}
