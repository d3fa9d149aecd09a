package main

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// A secret with the characters an encoder escapes (an AWS secret key has slashes and pluses).
const slashSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY=EXAMPLEKEY"

func separated(s string, every int, sep string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += every {
		if i > 0 {
			b.WriteString(sep)
		}
		end := i + every
		if end > len(s) {
			end = len(s)
		}
		b.WriteString(s[i:end])
	}
	return b.String()
}

func eachRune(s string, f func(r rune) string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteString(f(r))
	}
	return b.String()
}

// encodings are what an agent could do to a secret before sending it: each must be found, in a body, a header
// and a URL alike.
func encodings(secret string) map[string]string {
	raw := []byte(secret)
	hexForm := hex.EncodeToString(raw)
	b64 := base64.StdEncoding.EncodeToString(raw)
	forms := map[string]string{
		"encodeURIComponent":      url.QueryEscape(secret),
		"path-escaped":            url.PathEscape(secret),
		"every byte %XX":          eachRune(secret, func(r rune) string { return fmt.Sprintf("%%%02X", r) }),
		"every byte %xx, twice":   eachRune(secret, func(r rune) string { return fmt.Sprintf("%%25%02x", r) }),
		"%u escapes":              eachRune(secret, func(r rune) string { return fmt.Sprintf("%%u%04X", r) }),
		"hex":                     hexForm,
		"HEX":                     strings.ToUpper(hexForm),
		"hex with colons":         separated(hexForm, 2, ":"),
		"hex with spaces":         separated(hexForm, 2, " "),
		"hex as \\x":              "\\x" + separated(hexForm, 2, "\\x"),
		"hex as 0x, commas":       "0x" + separated(hexForm, 2, ", 0x"),
		"hex in groups of 8":      separated(hexForm, 8, "-"),
		"base64 wrapped at 76":    separated(b64, 76, "\n") + "\n",
		"base64 wrapped at 16":    separated(b64, 16, "\r\n"),
		"base64 split by spaces":  separated(b64, 4, " "),
		"base64 split by dots":    separated(b64, 10, "."),
		"base64url":               base64.RawURLEncoding.EncodeToString(raw),
		"JSON \\u escapes":        eachRune(secret, func(r rune) string { return fmt.Sprintf("\\u%04x", r) }),
		"\\u{} escapes":           eachRune(secret, func(r rune) string { return fmt.Sprintf("\\u{%x}", r) }),
		"HTML decimal references": eachRune(secret, func(r rune) string { return fmt.Sprintf("&#%d;", r) }),
		"HTML hex references":     eachRune(secret, func(r rune) string { return fmt.Sprintf("&#x%X;", r) }),
		"fullwidth": eachRune(secret, func(r rune) string {
			if r > ' ' && r < 0x7F {
				return string(r + 0xFEE0)
			}
			return string(r)
		}),
		"mathematical bold": eachRune(secret, func(r rune) string {
			switch {
			case 'A' <= r && r <= 'Z':
				return string(0x1D400 + r - 'A')
			case 'a' <= r && r <= 'z':
				return string(0x1D41A + r - 'a')
			case '0' <= r && r <= '9':
				return string(0x1D7CE + r - '0')
			}
			return string(r)
		}),
		"zero-width spaces between": eachRune(secret, func(r rune) string { return string(r) + "\u200b" }),
		"spaces between":            eachRune(secret, func(r rune) string { return string(r) + " " }),
		"reversed": eachRune(secret, func(r rune) string { return "" }) + func() string {
			b := []byte(secret)
			for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
				b[i], b[j] = b[j], b[i]
			}
			return string(b)
		}(),
		"upper case":                           strings.ToUpper(secret),
		"octal escapes":                        eachRune(secret, func(r rune) string { return fmt.Sprintf("\\%03o", r) }),
		"HTML references without ;":            eachRune(secret, func(r rune) string { return fmt.Sprintf("&#%d", r) }),
		"HTML references, zeros first":         eachRune(secret, func(r rune) string { return fmt.Sprintf("&#%012d;", r) }),
		"HTML hex references, no ;":            eachRune(secret, func(r rune) string { return fmt.Sprintf("&#x%06x", r) }),
		"a byte array (a Node Buffer in JSON)": `{"type":"Buffer","data":[` + strings.Trim(strings.Join(strings.Fields(fmt.Sprint([]byte(secret))), ","), "[]") + `]}`,
		"tag characters":                       eachRune(secret, func(r rune) string { return string(0xE0000 + r) }),
		"parenthesized and regional look-alikes": eachRune(secret, func(r rune) string {
			switch {
			case 'a' <= r && r <= 'z':
				return string(0x249C + r - 'a')
			case 'A' <= r && r <= 'M':
				return string(0x1F110 + r - 'A')
			case 'N' <= r && r <= 'Z':
				return string(0x1F1E6 + r - 'A')
			case '0' <= r && r <= '9':
				return string(0x1F101 + r - '0')
			}
			return string(r)
		}),
		"UTF-16": eachRune(secret, func(r rune) string { return string(r) + "\x00" }),
		"rot13": eachRune(secret, func(r rune) string {
			switch {
			case 'a' <= r && r <= 'z':
				return string('a' + (r-'a'+13)%26)
			case 'A' <= r && r <= 'Z':
				return string('A' + (r-'A'+13)%26)
			}
			return string(r)
		}),
		"bits":                         eachRune(secret, func(r rune) string { return fmt.Sprintf("%08b ", r) }),
		"octal numbers":                eachRune(secret, func(r rune) string { return fmt.Sprintf("%o,", r) }),
		"decimal numbers, zeros first": eachRune(secret, func(r rune) string { return fmt.Sprintf("%04d,", r) }),
		"hex of hex":                   hex.EncodeToString([]byte(hexForm)),
		"base64 of hex":                base64.StdEncoding.EncodeToString([]byte(hexForm)),
		"base64 three times": base64.StdEncoding.EncodeToString([]byte(base64.StdEncoding.EncodeToString(
			[]byte(b64)))),
		"HTML double-struck letters": eachRune(secret, func(r rune) string {
			if 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' {
				return "&" + string(r) + "opf;"
			}
			return string(r)
		}),
		"quoted-printable, every other character": func() string {
			var b strings.Builder
			for i, c := range []byte(secret) {
				if i%2 == 1 {
					fmt.Fprintf(&b, "=%02X", c)
				} else {
					b.WriteByte(c)
				}
			}
			return b.String()
		}(),
		"letterlike symbols, modifiers and accents": eachRune(secret, func(r rune) string {
			switch {
			case r == 'C':
				return "\u2102" // double-struck C
			case r == 'k':
				return "\u1D4F" // modifier small k
			case r == 'a':
				return "\u00AA" // feminine ordinal
			case r == 'X':
				return "\u2169" // Roman numeral ten
			case 'a' <= r && r <= 'z':
				return string(r) + "\u0301" // an acute accent on it
			}
			return string(r)
		}),
	}
	for _, prefix := range []string{"", "k", "k=", "ke=", "key="} {
		for name, encode := range map[string]func([]byte) string{
			"base32":    base32.StdEncoding.EncodeToString,
			"base32hex": base32.HexEncoding.EncodeToString,
			"base64":    base64.StdEncoding.EncodeToString,
		} {
			encoded := encode(append([]byte(prefix), raw...))
			forms[fmt.Sprintf("%s after %q", name, prefix)] = encoded
			forms[fmt.Sprintf("%s after %q, lower case", name, prefix)] = strings.ToLower(encoded)
		}
	}
	return forms
}

func TestEveryEncodingOfASecretIsRefusedInABody(t *testing.T) {
	for _, secret := range []string{testSecret, slashSecret} {
		for name, form := range encodings(secret) {
			body := `{"a":"x","a":"` + form + `"}` // a duplicated key: pipelock reads only the last
			for _, chunk := range []int{1, 13, 32 << 10} {
				if chunk == 1 && len(body) > 2000 {
					continue
				}
				src := chunked(body, chunk)
				_, err := drain(&scannedBody{src: src, scanner: newSecretScanner([]string{secret})}, chunk)
				// Read a byte at a time, the body's first pieces make up all but the last few characters first.
				if err != errSecretInBody && err != errPiecesInBody {
					t.Errorf("%s (%.12s…), reads of %d: %v, want the secret refused", name, secret, chunk, err)
				}
			}
		}
	}
}

func TestEveryEncodingOfASecretIsRefusedInAHeaderAndAURL(t *testing.T) {
	for _, secret := range []string{testSecret, slashSecret} {
		for name, form := range encodings(secret) {
			for _, where := range []string{"header", "url"} {
				r := httptest.NewRequest("GET", "https://allowed.test/x", nil)
				if where == "header" {
					r.Header.Set("X-Note", strings.ReplaceAll(form, "\n", " "))
				} else {
					r.RequestURI = "/x?q=" + url.QueryEscape(form)
				}
				if why := newSecretScanner([]string{secret}).refusedRequest(r); why == "" {
					t.Errorf("%s in a %s: not refused", name, where)
				}
			}
		}
	}
}

// A secret that is mostly punctuation (few letters and digits to look for alone) is still found spread out.
func TestASecretOfFewLettersIsFoundSpreadOut(t *testing.T) {
	const secret = "x9!#k@2$Q%z^7&*(Lp"
	for name, text := range map[string]string{
		"spaces between":   eachRune(secret, func(r rune) string { return string(r) + " " }),
		"UTF-16":           eachRune(secret, func(r rune) string { return string(r) + "\x00" }),
		"reversed":         "x" + eachRune(secret, func(r rune) string { return "" }) + reverse(secret),
		"newlines between": eachRune(secret, func(r rune) string { return string(r) + "\n" }),
	} {
		if whole, _ := newSecretScanner([]string{secret}).found([]byte(text), false, carried{}); !whole {
			t.Errorf("%s: not found", name)
		}
	}
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// Text that is not a secret but shares much with one, and ordinary traffic, goes through.
func TestLookAlikesAndOrdinaryTextAreNotRefused(t *testing.T) {
	almost := []byte(testSecret)
	for i := 0; i < len(almost); i += 4 {
		almost[i] ^= 1
	}
	random := rand.New(rand.NewSource(1))
	noise := func(alphabet string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[random.Intn(len(alphabet))]
		}
		return string(b)
	}
	for name, text := range map[string]string{
		"every fourth character changed": string(almost),
		"half of it":                     testSecret[:len(testSecret)/2],
		"a JSON document":                `{"model":"claude","messages":[{"role":"user","content":"Hello \u00e9 world & co"}]}`,
		"a URL-encoded form":             "q=hello%20world&lang=en&page=2&token=abc%2Fdef",
		"random hex":                     noise("0123456789abcdef", 1<<20),
		"random base64":                  noise("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 1<<20),
		"random digits":                  noise("0123456789", 1<<20),
	} {
		s := newSecretScanner([]string{testSecret, slashSecret})
		if whole, complete := s.found([]byte(text), true, carried{}); whole || complete {
			t.Errorf("%s: found (whole %v, from pieces %v)", name, whole, complete)
		}
	}
}

func chunked(body string, chunk int) *chunkReader { return &chunkReader{rest: body, chunk: chunk} }

// drain reads b to its end or error, `chunk` bytes at a time at most.
func drain(b io.Reader, chunk int) (string, error) {
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := b.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return string(out), nil
		}
		if err != nil {
			return string(out), err
		}
	}
}

type chunkReader struct {
	rest  string
	chunk int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.rest == "" {
		return 0, io.EOF
	}
	n := c.chunk
	if n > len(p) {
		n = len(p)
	}
	if n > len(c.rest) {
		n = len(c.rest)
	}
	copy(p, c.rest[:n])
	c.rest = c.rest[n:]
	return n, nil
}

func (c *chunkReader) Close() error { return nil }
