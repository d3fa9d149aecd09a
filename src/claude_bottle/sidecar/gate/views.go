package main

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"unicode"
	"unicode/utf8"
)

// A secret can leave in forms a byte-for-byte search does not see: in another case, in look-alike letters
// (fullwidth, mathematical, circled), with invisible characters between its letters, escaped for a URL, a
// JSON string or HTML, with separators between the pairs of its hex or the lines of its base64, or a piece at a
// time, each piece encoded on its own. The scanner looks at a few views of a text that undo these, each one a
// pass over the bytes (no parser to get around): folded (look-alikes as ASCII letters and digits, invisible
// characters dropped), decoded (the escapes undone, again until nothing changes), what the hex and the base64
// in either decode to, and of each of those, in lower case, the whole, the letters and digits alone and the
// hex digits alone.

// fold returns text with look-alike letters and digits as ASCII and invisible characters (and the marks that
// combine with a letter) gone.
func fold(text []byte) []byte {
	out := make([]byte, 0, len(text))
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(text[i:])
		switch ascii, known := lookAlikes[r]; {
		case r == utf8.RuneError && size <= 1:
			out = append(out, c)
		case known:
			out = append(out, ascii...)
		default:
			if extra, ok := lookAlike(r); ok {
				if extra != 0 {
					out = append(out, extra)
				}
			} else if !unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf) {
				out = append(out, text[i:i+size]...)
			}
		}
		i += size
	}
	return out
}

// lower is text with its ASCII letters in lower case, in a new slice.
func lower(text []byte) []byte {
	out := make([]byte, len(text))
	for i, c := range text {
		out[i] = lowerASCII[c]
	}
	return out
}

var lowerASCII = func() (t [256]byte) {
	for c := range t {
		t[c] = byte(c)
		if 'A' <= c && c <= 'Z' {
			t[c] += 'a' - 'A'
		}
	}
	return t
}()

// lookAlike gives the ASCII a character stands for that has no compatibility decomposition (lookAlikes has
// those): tag characters, which spell ASCII invisibly, and letters and digits in dingbats and enclosures; ok
// is false for any other character.
func lookAlike(r rune) (byte, bool) {
	letter := func(i rune) byte { return byte('A' + i) }
	switch {
	case 0xE0020 <= r && r <= 0xE007E: // tag characters
		return byte(r - 0xE0000), true
	case 0x1F150 <= r && r <= 0x1F169, 0x1F170 <= r && r <= 0x1F189: // negative circled and squared capitals
		return letter((r - 0x1F150) % 32), true
	case 0x1F1E6 <= r && r <= 0x1F1FF: // regional indicators
		return letter(r - 0x1F1E6), true
	case 0x2776 <= r && r <= 0x277E, 0x2780 <= r && r <= 0x2788, 0x278A <= r && r <= 0x2792: // dingbat digits
		return byte('1' + (r-0x2776)%10), true
	case 0x24F5 <= r && r <= 0x24FD: // double circled digits
		return byte('1' + r - 0x24F5), true
	case r == 0x24FF || r == 0x1F10B || r == 0x1F10C:
		return '0', true
	}
	return 0, false
}

// decode undoes percent-escapes (%41, %u0041), backslash escapes (\x41, \u0041, \u{41}, \U00000041, \/)
// and HTML character references (&#65; &#x41; &amp;) in a folded text, folding what they give, until a round
// changes nothing (at most four: a secret escaped twice or three times is still found).
func decode(folded []byte) []byte {
	text := folded
	for round := 0; round < 4; round++ {
		next, changed := unescape(text)
		if !changed {
			break
		}
		text = fold(next)
	}
	return text
}

func unescape(text []byte) ([]byte, bool) {
	if bytes.IndexAny(text, "%\\&") < 0 {
		return text, false
	}
	out := make([]byte, 0, len(text))
	changed := false
	for i := 0; i < len(text); {
		if r, n := escapeAt(text, i); n > 0 {
			// %XX and \xXX stand for a byte (of UTF-8, perhaps), the others for a character.
			if r < utf8.RuneSelf || (n == 3 && text[i] == '%') || (n == 4 && lowerASCII[text[i+1]] == 'x') {
				out = append(out, byte(r))
			} else {
				out = utf8.AppendRune(out, r)
			}
			i += n
			changed = true
			continue
		}
		out = append(out, text[i])
		i++
	}
	return out, changed
}

// escapeAt reads an escape at text[i]: the character it stands for and its length (0 if there is none).
func escapeAt(text []byte, i int) (rune, int) {
	rest := text[i:]
	switch rest[0] {
	case '%':
		if len(rest) >= 6 && (rest[1] == 'u' || rest[1] == 'U') {
			if r, ok := hexValue(rest[2:6]); ok {
				return r, 6
			}
		}
		if len(rest) >= 3 {
			if r, ok := hexValue(rest[1:3]); ok {
				return r, 3
			}
		}
	case '\\':
		if len(rest) < 2 {
			return 0, 0
		}
		switch rest[1] {
		case 'x', 'X':
			if len(rest) >= 4 {
				if r, ok := hexValue(rest[2:4]); ok {
					return r, 4
				}
			}
		case 'u':
			if len(rest) >= 4 && rest[2] == '{' {
				if end := bytes.IndexByte(rest[:min(len(rest), 12)], '}'); end > 3 {
					if r, ok := hexValue(rest[3:end]); ok {
						return r, end + 1
					}
				}
			}
			if len(rest) >= 6 {
				if r, ok := hexValue(rest[2:6]); ok {
					return r, 6
				}
			}
		case 'U':
			if len(rest) >= 10 {
				if r, ok := hexValue(rest[2:10]); ok {
					return r, 10
				}
			}
		case '/', '\\', '"', '\'':
			return rune(rest[1]), 2
		case '0', '1', '2', '3': // octal, as C and shells write a byte
			if len(rest) >= 4 && isOctal(rest[2]) && isOctal(rest[3]) {
				return rune(rest[1]-'0')<<6 | rune(rest[2]-'0')<<3 | rune(rest[3]-'0'), 4
			}
		}
	case '&':
		if len(rest) >= 3 && rest[1] == '#' {
			return characterReference(rest)
		}
		end := bytes.IndexByte(rest[:min(len(rest), 12)], ';')
		if end < 2 {
			return 0, 0
		}
		name := rest[1:end]
		if c, ok := entities[string(name)]; ok {
			return c, end + 1
		}
		// &Kopf; &Kscr; &Kfr;: the double-struck, script and fraktur letters (fold makes them ASCII).
		if len(name) >= 3 && ('A' <= name[0] && name[0] <= 'Z' || 'a' <= name[0] && name[0] <= 'z') {
			switch string(name[1:]) {
			case "opf", "scr", "fr":
				return rune(name[0]), end + 1
			}
		}

	}
	return 0, 0
}

func hexValue(digits []byte) (rune, bool) {
	if len(digits) == 0 || len(digits) > 8 {
		return 0, false
	}
	var r rune
	for _, c := range digits {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, r >= 0 && r <= utf8.MaxRune
}

// entities are the named character references that stand for ASCII punctuation.
var entities = map[string]rune{"amp": '&', "lt": '<', "gt": '>', "quot": '"', "apos": '\'', "colon": ':',
	"sol": '/', "period": '.', "lowbar": '_', "dash": '-', "hyphen": '-', "plus": '+', "equals": '=', "num": '#',
	"percnt": '%', "bsol": '\\', "excl": '!', "quest": '?', "commat": '@', "dollar": '$', "ast": '*',
	"lpar": '(', "rpar": ')', "comma": ',', "semi": ';', "Hat": '^', "grave": '`', "lbrace": '{', "rbrace": '}',
	"lsqb": '[', "rsqb": ']', "verbar": '|', "tilde": '~', "nbsp": ' ', "Tab": '\t', "NewLine": '\n'}

// quotedPrintable undoes quoted-printable (=4B, and =\r\n at a line's end) in a folded text, if it has any:
// a view of its own, as "=" and two hex digits are ordinary in a query string.
func quotedPrintable(text []byte) ([]byte, bool) {
	if bytes.IndexByte(text, '=') < 0 {
		return text, false
	}
	out := make([]byte, 0, len(text))
	changed := false
	for i := 0; i < len(text); i++ {
		if text[i] == '=' && i+2 < len(text) {
			if r, ok := hexValue(text[i+1 : i+3]); ok {
				out = append(out, byte(r))
				i += 2
				changed = true
				continue
			}
		}
		if text[i] == '=' && i+1 < len(text) && (text[i+1] == '\n' || text[i+1] == '\r') {
			i++
			if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
				i++
			}
			changed = true
			continue
		}
		out = append(out, text[i])
	}
	return out, changed
}

// characterReference reads an HTML character reference (&#65; &#x41;) as browsers do: any number of leading
// zeros, and the ';' may be left out.
func characterReference(rest []byte) (rune, int) {
	i, base := 2, rune(10)
	if rest[2] == 'x' || rest[2] == 'X' {
		i, base = 3, 16
	}
	var r rune
	digits := 0
	for ; i < len(rest) && digits < 32; i, digits = i+1, digits+1 {
		d, ok := hexValue(rest[i : i+1])
		if !ok || d >= base {
			break
		}
		if r = r*base + d; r > utf8.MaxRune {
			return 0, 0
		}
	}
	if digits == 0 {
		return 0, 0
	}
	if i < len(rest) && rest[i] == ';' {
		i++
	}
	return r, i
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// byteClass is a set of bytes.
type byteClass [256]bool

func classOf(chars string) *byteClass {
	var c byteClass
	for i := 0; i < len(chars); i++ {
		c[chars[i]] = true
	}
	return &c
}

var (
	alnumClass = classOf("abcdefghijklmnopqrstuvwxyz0123456789")
	hexClass   = classOf("abcdef0123456789")
)

// only keeps the bytes of a folded text that are in class: separators between the characters of an encoding
// (a hex dump's colons, base64's line breaks, dots between groups) are gone. Of hex digits, the 0 of a 0x is
// a separator too.
func only(text []byte, class *byteClass) []byte {
	if class == hexClass && bytes.IndexByte(text, 'x') >= 0 {
		return hexDigitsOf(text)
	}
	out := make([]byte, len(text)+1)
	j := 0
	for _, c := range text {
		out[j] = c
		if class[c] {
			j++
		}
	}
	return out[:j]
}

// hexDigitsOf is only(text, hexClass) for a text with an x in it, which may be a 0x.
func hexDigitsOf(text []byte) []byte {
	out := make([]byte, 0, len(text))
	for i, c := range text {
		if hexClass[c] && !(c == '0' && i+1 < len(text) && text[i+1] == 'x') {
			out = append(out, c)
		}
	}
	return out
}

// lettersOf is only(lower(text), alnumClass) in one pass.
func lettersOf(text []byte) []byte {
	out := make([]byte, len(text)+1)
	j := 0
	for _, c := range text {
		c = lowerASCII[c]
		out[j] = c
		if alnumClass[c] {
			j++
		}
	}
	return out[:j]
}

var base64Class = classOf("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")

// decodedRuns are what the hex, base64 and base32 in a folded text decode to, at every alignment: its hex
// digits alone (digits, given: separators gone) from the first and from the second; its base64 characters
// alone (either alphabet, separators gone) from each of the first four; each run of base64 characters on its
// own, from each of its first four, to its last character (a piece encoded on its own ends in padding, or in
// a partial group); each run of letters and digits on its own as base32 (either alphabet, either case); its
// numbers up to 255, decimal or octal, as bytes (a byte array in JSON, as Node writes a Buffer); and its 0s and
// 1s as bits, from each of the first eight. A secret sent a piece at a
// time, each piece encoded on its own, is in them piece by piece, as it is.
func decodedRuns(text, digits []byte) [][]byte {
	var out [][]byte
	for start := 0; start < 2 && start < len(digits); start++ {
		run := digits[start:]
		raw := make([]byte, len(run)/2)
		hex.Decode(raw, run[:len(raw)*2]) // only hex digits: no error
		out = append(out, raw)
	}
	b64 := make([]byte, len(text))
	for i, c := range text {
		switch c {
		case '-':
			c = '+'
		case '_':
			c = '/'
		}
		b64[i] = c
	}
	out = append(out, fromBase64(only(b64, base64Class))...)
	out = append(out, byteNumbers(text, 10), byteNumbers(text, 8))
	if bits := only(text, bitClass); len(bits) >= 64 {
		for start := 0; start < 8; start++ {
			out = append(out, fromBits(bits[start:]))
		}
	}
	// Runs decoded on their own go into one slice per alignment and alphabet, a zero byte between them: a few
	// long slices to look at, not one per run.
	var alone [6][]byte
	for _, run := range runs(b64, base64Class, 8) {
		for start, raw := range fromBase64(run) {
			alone[start] = append(append(alone[start], raw...), 0)
		}
	}
	for _, run := range runs(bytes.ToUpper(text), upperAlnumClass, 8) {
		alone[4] = append(append(alone[4], fromBase32(run, base32.StdEncoding)...), 0)
		alone[5] = append(append(alone[5], fromBase32(run, base32.HexEncoding)...), 0)
	}
	return append(out, alone[:]...)
}

var upperAlnumClass = classOf("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

// runs are the stretches of text in class at least min long.
func runs(text []byte, class *byteClass, min int) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i <= len(text); i++ {
		if i < len(text) && class[text[i]] {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= min {
			out = append(out, text[start:i])
		}
		start = -1
	}
	return out
}

// fromBase32 decodes a run of upper-case letters and digits as base32 from its start, to its last whole byte;
// a character outside the alphabet ends it.
func fromBase32(run []byte, enc *base32.Encoding) []byte {
	raw := make([]byte, len(run)*5/8+1)
	n, _ := enc.WithPadding(base32.NoPadding).Decode(raw, run[:(len(run)*5/8*8+4)/5])
	return raw[:n]
}

// byteNumbers is the numbers in text (of up to six digits, zeros first too) written in base (10 or 8) that are
// up to 255, as bytes; any other number is a 0.
func byteNumbers(text []byte, base int) []byte {
	var out []byte
	for i := 0; i < len(text); {
		if text[i] < '0' || text[i] > '9' {
			i++
			continue
		}
		start, value := i, 0
		for ; i < len(text) && '0' <= text[i] && text[i] <= '9'; i++ {
			if int(text[i]-'0') >= base {
				value = 256
			}
			if value <= 255 {
				value = value*base + int(text[i]-'0')
			}
		}
		if i-start > 6 || value > 255 {
			value = 0
		}
		out = append(out, byte(value))
	}
	return out
}

var bitClass = classOf("01")

// fromBits reads text of 0s and 1s as bytes, eight bits each.
func fromBits(bits []byte) []byte {
	out := make([]byte, len(bits)/8)
	for i := range out {
		var b byte
		for _, c := range bits[8*i : 8*i+8] {
			b = b<<1 | (c - '0')
		}
		out[i] = b
	}
	return out
}

// fromBase64 decodes base64 characters from each of the first four, to the last whole character.
func fromBase64(chars []byte) [][]byte {
	var out [][]byte
	for start := 0; start < 4 && start < len(chars); start++ {
		run := chars[start:]
		if len(run)%4 == 1 {
			run = run[:len(run)-1] // a lone character holds no whole byte
		}
		raw := make([]byte, base64.RawStdEncoding.DecodedLen(len(run)))
		n, _ := base64.RawStdEncoding.Decode(raw, run) // base64 characters only, no padding: no error
		out = append(out, raw[:n])
	}
	return out
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}
