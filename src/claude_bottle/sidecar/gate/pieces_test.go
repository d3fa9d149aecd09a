package main

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// send puts text in one place of a request, as a hijacked agent would, and says whether the gate refused it.
func send(t *testing.T, s *secretScanner, where, text string) bool {
	t.Helper()
	r := httptest.NewRequest("POST", "https://allowed.test/upload", nil)
	switch where {
	case "path":
		r.RequestURI = "/" + url.PathEscape(text) + "/x"
	case "query":
		r.RequestURI = "/upload?page=" + url.QueryEscape(text)
	case "header":
		r.Header.Set("X-Request-Id", text)
	case "body":
		if r.RequestURI = "/upload"; s.refusedRequest(r) != "" {
			return true
		}
		_, err := drain(&scannedBody{src: chunked(`{"note":"`+text+`"}`, 4096), scanner: s}, 4096)
		return err != nil
	default:
		t.Fatalf("no place %q", where)
	}
	return s.refusedRequest(r) != ""
}

func split(s string, n int) []string {
	var parts []string
	size := (len(s) + n - 1) / n
	for i := 0; i < len(s); i += size {
		end := i + size
		if end > len(s) {
			end = len(s)
		}
		parts = append(parts, s[i:end])
	}
	return parts
}

// A secret sent in pieces is refused at the request that would complete it, whatever the order of the pieces,
// whatever goes between them, wherever in the requests they are; every piece before it goes on.
func TestASecretInPiecesIsRefusedAtTheLastPiece(t *testing.T) {
	hexForm := hex.EncodeToString([]byte(testSecret))
	dummy := func(i int) string { return "ordinary request number " + string(rune('a'+i)) }
	cases := map[string][]string{}
	// Every piece is long enough to count, and the last one brings six characters or more.
	for _, n := range []int{2, 3, 4} {
		parts := split(testSecret, n)
		cases["in order, "+string(rune('0'+n))] = parts
		var reversed, between []string
		for i := len(parts) - 1; i >= 0; i-- {
			reversed = append(reversed, parts[i])
		}
		for i, p := range parts {
			between = append(between, p, dummy(i), dummy(i+10))
		}
		cases["reversed, "+string(rune('0'+n))] = reversed
		cases["requests between, "+string(rune('0'+n))] = between
		// Pieces that overlap, with junk around them.
		var overlapping []string
		for i := 0; i+6 < len(testSecret); i += 10 {
			end := i + 12
			if end > len(testSecret) {
				end = len(testSecret)
			}
			overlapping = append(overlapping, "xx"+testSecret[i:end]+"yy")
		}
		cases["overlapping with junk"] = overlapping
	}
	cases["hex pieces"] = split(hexForm, 4)
	// Each piece encoded on its own, each in another way.
	quarters := split(testSecret, 4)
	cases["each piece encoded its own way"] = []string{
		base64.StdEncoding.EncodeToString([]byte(quarters[2])),
		hex.EncodeToString([]byte(quarters[0])),
		"k=" + base64.RawURLEncoding.EncodeToString([]byte(quarters[3])),
		strings.ToUpper(hex.EncodeToString([]byte(quarters[1]))),
	}
	cases["each piece base64 after a prefix"] = []string{
		base64.StdEncoding.EncodeToString([]byte("a" + quarters[1])),
		base64.StdEncoding.EncodeToString([]byte("ab" + quarters[3])),
		base64.StdEncoding.EncodeToString([]byte("abc" + quarters[0])),
		base64.StdEncoding.EncodeToString([]byte(quarters[2])),
	}
	cases["pieces upper and lower"] = []string{strings.ToUpper(testSecret[:16]), strings.ToLower(testSecret[16:])}
	cases["percent-encoded pieces"] = []string{url.QueryEscape(testSecret[20:]),
		"%" + strings.Join(split(strings.ToUpper(hex.EncodeToString([]byte(testSecret[:20]))), 20), "%")}
	// Each piece in padded base64 after a prefix, in sizes whose base64 ends in a partial group.
	for _, size := range []int{7, 8, 11} {
		var padded []string
		for i := 0; i < len(testSecret); i += size {
			end := i + size
			if end > len(testSecret) {
				end = len(testSecret)
			}
			if end-i < 6 {
				padded[len(padded)-1] = "p=" + base64.StdEncoding.EncodeToString([]byte(testSecret[i-size:end]))
				continue
			}
			padded = append(padded, "p="+base64.StdEncoding.EncodeToString([]byte(testSecret[i:end])))
		}
		cases[fmt.Sprintf("padded base64 pieces of %d", size)] = padded
	}
	cases["each piece reversed"] = []string{reverse(quarters[1]), reverse(quarters[3]), reverse(quarters[0]),
		reverse(quarters[2])}
	cases["each piece base32"] = []string{base32.StdEncoding.EncodeToString([]byte(quarters[2])),
		strings.ToLower(base32.StdEncoding.EncodeToString([]byte(quarters[0]))),
		base32.HexEncoding.EncodeToString([]byte(quarters[3])),
		"p=" + base32.StdEncoding.EncodeToString([]byte(quarters[1]))}
	places := []string{"path", "query", "header", "body"}
	for name, parts := range cases {
		for p, first := range places {
			s := newSecretScanner([]string{testSecret})
			last := -1
			for i, part := range parts {
				where := places[(p+i)%len(places)]
				if where == "path" && strings.Contains(part, "%") {
					where = "query" // a path is read decoded
				}
				if send(t, s, where, part) {
					last = i
					break
				}
			}
			lastPiece := len(parts) - 1
			for lastPiece > 0 && strings.HasPrefix(parts[lastPiece], "ordinary") {
				lastPiece--
			}
			if last != lastPiece {
				t.Errorf("%s, starting in the %s: refused at request %d of %d, want at %d", name, first, last,
					len(parts), lastPiece)
			}
		}
	}
}

// The rest of a secret in a piece too short to count is not seen: the request before it, which would leave that
// little unsent, is refused.
func TestARequestThatWouldLeaveTooLittleUnsentIsRefused(t *testing.T) {
	s := newSecretScanner([]string{testSecret})
	cut := len(testSecret) - 4
	if send(t, s, "query", testSecret[:cut/2]) {
		t.Fatal("the first half was refused")
	}
	if !send(t, s, "header", testSecret[cut/2:cut]) {
		t.Error("the request that leaves four characters unsent went on")
	}
}

func TestPiecesInOneRequestInAnyOrderAreRefused(t *testing.T) {
	parts := split(testSecret, 4)
	body := parts[3] + " " + parts[1] + "&" + parts[0] + "\n" + parts[2]
	if !send(t, newSecretScanner([]string{testSecret}), "body", body) {
		t.Error("four pieces out of order in one body went on")
	}
}

func TestPiecesSentFurtherApartThanTheWindowDoNotAddUp(t *testing.T) {
	s := newSecretScanner([]string{testSecret})
	clock := time.Now()
	s.pieces.now = func() time.Time { return clock }
	parts := split(testSecret, 2)
	if send(t, s, "query", parts[0]) {
		t.Fatal("the first piece was refused")
	}
	clock = clock.Add(piecesWindow + time.Minute)
	if send(t, s, "query", parts[1]) {
		t.Error("a piece an hour after the other was refused")
	}
	if !send(t, s, "header", parts[0]) {
		t.Error("the first piece again, within the window of the second: not refused")
	}
}

// Ordinary traffic over a long session never adds up to a secret: a thousand requests of random letters and
// digits, and of hex (commit ids), each with short runs of the secret in it.
func TestOrdinaryTrafficDoesNotAddUpToASecret(t *testing.T) {
	s := newSecretScanner([]string{testSecret, "0123456789abcdef0123456789abcdef01234567"})
	shortRuns := split(testSecret, 8) // pieces of four: shorter than a piece that counts
	for i := 0; i < 1000; i++ {
		text := shortRuns[i%len(shortRuns)] + " " + hex.EncodeToString([]byte(strings.Repeat(string(rune('a'+i%26)), 40)))
		for _, where := range []string{"query", "header", "body"} {
			if send(t, s, where, text) {
				t.Fatalf("request %d refused: %q", i, text)
			}
		}
	}
}

// Big ordinary uploads (numbers in JSON, base64 of binary files) over a long session do not add up to any
// secret of the shapes users have: a GitHub token, an AWS secret key, 40 hex digits, 16 decimal digits.
func TestBigOrdinaryUploadsDoNotAddUpToASecret(t *testing.T) {
	secrets := []string{"ghp_Zq8vT3kLm9PxW2rYb7NcJ4hGd6FsQ1aE0u9i", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"3b18e512dba79e4c8300dd08aeb37f8e728b8dad", "4532015112830366"}
	s := newSecretScanner(secrets)
	random := rand.New(rand.NewSource(7))
	for upload := 0; upload < 8; upload++ {
		var numbers strings.Builder
		numbers.WriteString(`{"values":[`)
		for numbers.Len() < 1<<20 {
			fmt.Fprintf(&numbers, "%d,", random.Intn(1000000))
		}
		numbers.WriteString("0]}")
		binary := make([]byte, 3<<18)
		random.Read(binary)
		for name, body := range map[string]string{"numbers": numbers.String(),
			"base64": `{"file":"` + base64.StdEncoding.EncodeToString(binary) + `"}`} {
			if _, err := drain(&scannedBody{src: chunked(body, 32<<10), scanner: s}, 32<<10); err != nil {
				t.Fatalf("upload %d (%s): %v", upload, name, err)
			}
		}
	}
}
