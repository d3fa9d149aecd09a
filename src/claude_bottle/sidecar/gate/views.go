package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
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

// fold returns text with look-alike letters and digits as ASCII and invisible characters gone.
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
		if r == utf8.RuneError && size <= 1 {
			out = append(out, c)
			i++
			continue
		}
		if ascii, ok := lookAlike(r); ok {
			if ascii != 0 {
				out = append(out, ascii)
			}
		} else {
			out = append(out, text[i:i+size]...)
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

// lookAlike gives the ASCII letter or digit a compatibility character stands for, 0 for a character that shows
// nothing; ok is false for any other character. It covers what NFKC folds to letters and digits in the blocks
// a text can be written in whole, which the standard library has no tables for.
func lookAlike(r rune) (byte, bool) {
	letter := func(i rune) byte { // 0-25 capitals, 26-51 small letters
		if i < 26 {
			return byte('A' + i)
		}
		return byte('a' + i - 26)
	}
	switch {
	case r == 0xAD || (0x200B <= r && r <= 0x200F) || (0x2060 <= r && r <= 0x2064) || r == 0xFEFF ||
		r == 0x180E || r == 0x034F || (0xFE00 <= r && r <= 0xFE0F):
		return 0, true // soft hyphen, zero-width characters, joiners, variation selectors
	case 0xFF01 <= r && r <= 0xFF5E: // fullwidth ASCII
		return byte(r - 0xFEE0), true
	case r == 0x3000:
		return ' ', true
	case 0x1D400 <= r && r <= 0x1D6A3: // mathematical letters: 13 styles of A-Z a-z
		return letter((r - 0x1D400) % 52), true
	case 0x1D7CE <= r && r <= 0x1D7FF: // mathematical digits: 5 styles of 0-9
		return byte('0' + (r-0x1D7CE)%10), true
	case 0x24B6 <= r && r <= 0x24E9: // circled letters
		return letter(r - 0x24B6), true
	case 0x2460 <= r && r <= 0x2468: // circled digits one to nine
		return byte('1' + r - 0x2460), true
	case r == 0x24EA:
		return '0', true
	case r == 0xB9:
		return '1', true
	case r == 0xB2 || r == 0xB3:
		return byte('2' + r - 0xB2), true
	case r == 0x2070 || (0x2074 <= r && r <= 0x2079): // superscript digits
		return byte('0' + r - 0x2070), true
	case 0x2080 <= r && r <= 0x2089: // subscript digits
		return byte('0' + r - 0x2080), true
	case 0x249C <= r && r <= 0x24B5: // parenthesized small letters
		return letter(26 + r - 0x249C), true
	case 0x1F110 <= r && r <= 0x1F129: // parenthesized capitals
		return letter(r - 0x1F110), true
	case 0x1F130 <= r && r <= 0x1F149, 0x1F150 <= r && r <= 0x1F169, 0x1F170 <= r && r <= 0x1F189:
		return letter((r - 0x1F130) % 32), true // squared, negative circled and negative squared capitals
	case 0x1F1E6 <= r && r <= 0x1F1FF: // regional indicators
		return letter(r - 0x1F1E6), true
	case r == 0x1F100:
		return '0', true
	case 0x1F101 <= r && r <= 0x1F10A: // digit comma
		return byte('0' + r - 0x1F101), true
	case 0x2474 <= r && r <= 0x247C, 0x2488 <= r && r <= 0x2490: // parenthesized digits, digits full stop
		return byte('1' + (r-0x2474)%20), true
	case 0x2776 <= r && r <= 0x277E, 0x2780 <= r && r <= 0x2788, 0x278A <= r && r <= 0x2792: // dingbat digits
		return byte('1' + (r-0x2776)%10), true
	case 0x24F5 <= r && r <= 0x24FD: // double circled digits
		return byte('1' + r - 0x24F5), true
	case r == 0x24FF || r == 0x1F10B || r == 0x1F10C:
		return '0', true
	case 0xE0020 <= r && r <= 0xE007E: // tag characters spell ASCII invisibly
		return byte(r - 0xE0000), true
	case r == 0xE0001 || r == 0xE007F:
		return 0, true
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
		for entity, c := range map[string]rune{"amp": '&', "lt": '<', "gt": '>', "quot": '"', "apos": '\'',
			"colon": ':', "sol": '/', "period": '.', "lowbar": '_', "dash": '-', "hyphen": '-', "plus": '+',
			"equals": '=', "num": '#', "percnt": '%', "bsol": '\\'} {
			if string(name) == entity {
				return c, end + 1
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
	zeroX := class == hexClass && bytes.IndexByte(text, 'x') >= 0
	out := make([]byte, len(text)+1)
	j := 0
	for i, c := range text {
		out[j] = c
		if class[c] && !(zeroX && c == '0' && i+1 < len(text) && text[i+1] == 'x') {
			j++
		}
	}
	return out[:j]
}

var base64Class = classOf("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")

// decodedRuns are what the hex and the base64 in a folded text decode to, at every alignment: the hex digits
// alone (separators gone) from the first and from the second; the base64 characters alone (either alphabet,
// separators gone) from each of the first four; each run of base64 characters on its own, from each of its
// first four, to its last character (a piece encoded on its own ends in padding, or in a partial group); and
// its numbers up to 255 as bytes (a byte array in JSON, as Node writes a Buffer).
// A secret sent a piece at a time, each piece encoded on its own, is in them piece by piece, as it is.
func decodedRuns(text []byte) [][]byte {
	var out [][]byte
	digits := only(lower(text), hexClass)
	for start := 0; start < 2 && start < len(digits); start++ {
		run := digits[start:]
		raw := make([]byte, len(run)/2)
		hex.Decode(raw, run[:len(raw)*2]) // only hex digits: no error
		out = append(out, raw)
	}
	b64 := make([]byte, len(text))
	for i, c := range text {
		switch {
		case c == '-':
			c = '+'
		case c == '_':
			c = '/'
		case !base64Class[c]:
			c = 0 // ends a run
		}
		b64[i] = c
	}
	out = append(out, fromBase64(only(b64, base64Class))...)
	out = append(out, byteNumbers(text))
	for _, run := range bytes.FieldsFunc(b64, func(r rune) bool { return r == 0 }) {
		if len(run) >= 4 {
			out = append(out, fromBase64(run)...)
		}
	}
	return out
}

// byteNumbers is the numbers of up to three digits in text, each up to 255, as bytes; a longer number or a
// larger one is a 0.
func byteNumbers(text []byte) []byte {
	var out []byte
	for i := 0; i < len(text); {
		if text[i] < '0' || text[i] > '9' {
			i++
			continue
		}
		start, value := i, 0
		for ; i < len(text) && '0' <= text[i] && text[i] <= '9'; i++ {
			if value <= 255 {
				value = value*10 + int(text[i]-'0')
			}
		}
		if i-start > 3 || value > 255 {
			value = 0
		}
		out = append(out, byte(value))
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
