package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The Messages API can be asked to reach a URL the request names, from Anthropic's servers: the MCP connector
// (`mcp_servers`), the web fetch tool, and image or document blocks whose source is a URL. A request carrying
// the user's token that asks for one would carry what the agent put in it to a host of its choice, past the
// allowlist: the gate reads the request and refuses it. Claude Code itself asks for none of them (measured on
// the pinned version: its web search tool stays, whose queries go to the search provider, not to a host the
// request names).

// maxAPIRequest is the most of a Messages API request the gate reads: the API itself takes no more (32 MB).
const maxAPIRequest = 32 << 20

// betasThatFetch are the `anthropic-beta` features that let the API reach a URL of the request's choosing.
var betasThatFetch = []string{"mcp-client", "web-fetch"}

// refusedFetch reads r's body (leaving it readable again) and says why r may not go on to the API with the
// user's token ("" if it may).
func refusedFetch(r *http.Request) string {
	for _, value := range r.Header.Values("Anthropic-Beta") {
		for _, beta := range strings.Split(strings.ToLower(value), ",") {
			for _, fetching := range betasThatFetch {
				if strings.Contains(beta, fetching) {
					return "the request asks for the API's " + strings.TrimSpace(beta) +
						" feature, which would have Anthropic's servers reach a host the request names"
				}
			}
		}
	}
	// Every path: a gateway can serve the Messages API under any prefix, or read `//v1/messages`, `/V1/…`
	// or `/v1;/messages` as it.
	if r.Body == nil || r.Body == http.NoBody {
		return ""
	}
	limit := int64(maxAPIRequest + 1)
	if r.ContentLength >= 0 && r.ContentLength < limit {
		limit = r.ContentLength // no read past a declared length (declaredBody says why)
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, limit))
	r.Body.Close()
	if err != nil {
		r.Body = io.NopCloser(bytes.NewReader(nil))
		return "the request's body could not be read: " + err.Error()
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if r.ContentLength < 0 { // chunked: forwarded with its length now that it is read
		r.ContentLength = int64(len(raw))
		r.TransferEncoding = nil
		r.Header.Set("Content-Length", strconv.Itoa(len(raw)))
	}
	if len(raw) > maxAPIRequest {
		return fmt.Sprintf("the request's body is over %d MiB, more than the API takes", maxAPIRequest>>20)
	}
	plain, err := decoded(raw, r.Header.Values("Content-Encoding"))
	if err != nil {
		return err.Error()
	}
	if len(bytes.TrimSpace(plain)) == 0 {
		return ""
	}
	decoder := json.NewDecoder(bytes.NewReader(plain))
	var body any
	err = decoder.Decode(&body)
	if err == nil {
		if _, after := decoder.Token(); after != io.EOF { // nothing but white space after it
			err = errors.New("more after the document")
		}
	}
	if err != nil {
		return "the request's body is not one JSON document, so the sidecar cannot tell what it asks the API to fetch"
	}
	if key := duplicateKey(plain); key != "" {
		// Parsers differ on which of two values they keep: the API must read what the gate read.
		if len(key) > 40 {
			key = key[:40] + "…"
		}
		return fmt.Sprintf("the request's body names %q twice in one object", key)
	}
	return fetchesIn(body, 0)
}

// duplicateKey is a key named twice in one object of a JSON document that parses ("" if none is).
func duplicateKey(document []byte) string {
	decoder := json.NewDecoder(bytes.NewReader(document))
	type level struct {
		keys      map[string]bool // nil in an array
		expectKey bool
	}
	var stack []level
	for {
		token, err := decoder.Token()
		if err != nil {
			return ""
		}
		top := len(stack) - 1
		if key, isKey := token.(string); isKey && top >= 0 && stack[top].keys != nil && stack[top].expectKey {
			if stack[top].keys[key] {
				return key
			}
			stack[top].keys[key] = true
			stack[top].expectKey = false
			continue
		}
		switch token {
		case json.Delim('{'):
			stack = append(stack, level{keys: map[string]bool{}, expectKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, level{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:top]
		}
		// A value (or a closed object or array) ends: its object expects a key next.
		if top = len(stack) - 1; top >= 0 && stack[top].keys != nil {
			stack[top].expectKey = true
		}
	}
}

// decoded undoes the request's Content-Encoding (Claude Code can gzip its requests), reading at most
// maxAPIRequest bytes of the result.
func decoded(raw []byte, codings []string) ([]byte, error) {
	var names []string
	for _, coding := range strings.Split(strings.Join(codings, ","), ",") {
		if c := strings.ToLower(strings.TrimSpace(coding)); c != "" && c != "identity" {
			names = append(names, c)
		}
	}
	data := raw
	for i := len(names) - 1; i >= 0; i-- { // the last coding listed was applied last
		// gzip only (what Claude Code sends): its bytes are never JSON, so a server that ignores the header
		// cannot read them as a request the gate did not judge.
		if names[i] != "gzip" && names[i] != "x-gzip" {
			return nil, errors.New("the request's body is compressed with " + names[i] +
				", which the sidecar does not read; send it plain or gzipped")
		}
		reader, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, errors.New("the request's body is not valid " + names[i] + ": " + err.Error())
		}
		out, err := io.ReadAll(io.LimitReader(reader, maxAPIRequest+1))
		if err != nil {
			return nil, errors.New("the request's body is not valid " + names[i] + ": " + err.Error())
		}
		if len(out) > maxAPIRequest {
			return nil, fmt.Errorf("the request's body is over %d MiB uncompressed, more than the API takes",
				maxAPIRequest>>20)
		}
		data = out
	}
	return data, nil
}

// fetchesIn looks through a request's JSON for what would make the API reach a URL. What a tool call's
// `input` or a tool's `input_schema` holds is the model's or a schema's, which the API does not act on.
func fetchesIn(value any, depth int) string {
	if depth > 200 {
		return "the request's body is nested too deep to read"
	}
	switch v := value.(type) {
	case []any:
		for _, item := range v {
			if why := fetchesIn(item, depth+1); why != "" {
				return why
			}
		}
	case map[string]any:
		if _, ok := v["mcp_servers"]; ok {
			return "the request names MCP servers (mcp_servers) for Anthropic's servers to connect to"
		}
		if kind, ok := v["type"].(string); ok {
			switch {
			case strings.HasPrefix(kind, "web_fetch"):
				return "the request asks for the API's web fetch tool (" + kind + "), which reaches any URL"
			case strings.HasPrefix(kind, "mcp_"):
				return "the request asks for the API's MCP connector (" + kind + ")"
			case kind == "url":
				return "the request has a block whose source is a URL, which Anthropic's servers would fetch"
			}
		}
		for key, item := range v {
			if key == "input" || key == "input_schema" {
				continue
			}
			if why := fetchesIn(item, depth+1); why != "" {
				return why
			}
		}
	}
	return ""
}
