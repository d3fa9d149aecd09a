package main

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// The secret compressed with `bzip2 -9`: Go has no bzip2 writer.
var bzip2Secret = []byte{
	0x42, 0x5a, 0x68, 0x39, 0x31, 0x41, 0x59, 0x26, 0x53, 0x59, 0x04, 0x29,
	0x28, 0xda, 0x00, 0x00, 0x09, 0x8f, 0x80, 0x3d, 0xe0, 0x03, 0x95, 0x64,
	0xb0, 0x3c, 0x4a, 0x39, 0x40, 0x20, 0x00, 0x22, 0x93, 0x43, 0x08, 0x1a,
	0x7a, 0x20, 0xd3, 0xc9, 0x8a, 0x18, 0xc0, 0x01, 0x30, 0x00, 0x13, 0x26,
	0x01, 0xc7, 0xbe, 0x11, 0x5b, 0x71, 0x12, 0x0a, 0x9a, 0x2a, 0xdb, 0xa4,
	0x3b, 0x88, 0x9a, 0xdd, 0x11, 0x7f, 0x17, 0x72, 0x45, 0x38, 0x50, 0x90,
	0x04, 0x29, 0x28, 0xda,
}

// compressed is data written through the writer that newWriter makes.
func compressed(data []byte, newWriter func(io.Writer) io.WriteCloser) []byte {
	var buf bytes.Buffer
	w := newWriter(&buf)
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func gz(data []byte) []byte {
	return compressed(data, func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
}

func zlibbed(data []byte) []byte {
	return compressed(data, func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })
}

func deflated(data []byte) []byte {
	return compressed(data, func(w io.Writer) io.WriteCloser {
		f, _ := flate.NewWriter(w, flate.BestCompression)
		return f
	})
}

func zipped(t testing.TB, name string, data []byte) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	f, err := w.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	w.Close()
	return buf.Bytes()
}

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// readRaw reads body through a scannedBody, `chunk` bytes at a time at most, from a source that gives half of
// what is asked at a time (or one byte).
func readRaw(body []byte, chunk int) (string, error) {
	src := io.NopCloser(iotest.HalfReader(bytes.NewReader(body)))
	if chunk == 1 {
		src = io.NopCloser(iotest.OneByteReader(bytes.NewReader(body)))
	}
	return drain(&scannedBody{src: src, scanner: newSecretScanner([]string{testSecret})}, chunk)
}

func TestASecretCompressedWithNothingToSaySoIsRefused(t *testing.T) {
	secret := []byte("key=" + testSecret + "\n")
	// 2 MB that compresses poorly, for a stream whose secret comes long after its header has gone on.
	noise := []byte(base64.StdEncoding.EncodeToString(randomBytes(1500<<10, 7)))
	shapes := map[string][]byte{
		"gzip":                            gz(secret),
		"gzip after 1 MB of text":         append([]byte(strings.Repeat("plain text ", 100<<10)), gz(secret)...),
		"gzip, the secret 2 MB in":        gz(append(append([]byte{}, noise...), secret...)),
		"gzip in gzip":                    gz(gz(secret)),
		"gzip of the secret's base64":     gz([]byte(base64.StdEncoding.EncodeToString(secret))),
		"zlib":                            zlibbed(secret),
		"zlib after binary":               append(randomBytes(300<<10, 3), zlibbed(secret)...),
		"raw deflate":                     deflated(secret),
		"bzip2":                           bzip2Secret,
		"a zip's deflated entry":          zipped(t, "key.txt", bytes.Repeat(secret, 3)),
		"a zip, the secret in its second": append(zipped(t, "a.txt", noise[:100<<10]), zipped(t, "b.txt", secret)...),
		"a tar.gz-like stream in a multipart body": append(append([]byte("--b\r\nContent-Disposition: form-data; "+
			"name=\"f\"; filename=\"x.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"),
			gz(append(bytes.Repeat([]byte{0}, 4096), secret...))...), "\r\n--b--\r\n"...),
		"base64 of gzip in JSON":         []byte(`{"data":"` + base64.StdEncoding.EncodeToString(gz(secret)) + `"}`),
		"percent-encoded gzip in a form": []byte("d=" + url.QueryEscape(string(gz(secret)))),
		"base64 of raw deflate in JSON":  []byte(`{"data":"` + base64.StdEncoding.EncodeToString(deflated(secret)) + `"}`),
	}
	for name, body := range shapes {
		for _, chunk := range []int{1, 13, 32 << 10} {
			if chunk == 1 && len(body) > 100<<10 {
				continue // a byte at a time is the same scans, and slow
			}
			_, err := readRaw(body, chunk)
			if !errors.Is(err, errSecretInBody) && !errors.Is(err, errPiecesInBody) {
				t.Errorf("%s (reads of %d): error %v, want the secret refused", name, chunk, err)
			}
		}
	}
}

func TestACompressedSecretIsRefusedBeforeItsStreamEnds(t *testing.T) {
	// The whole stream is short: none of it leaves.
	body := gz([]byte(testSecret))
	got, err := readRaw(body, 32<<10)
	if !errors.Is(err, errSecretInBody) || len(got) != 0 {
		t.Fatalf("%d bytes passed on, error %v; want none and the secret refused", len(got), err)
	}
}

func TestCompressedDataWithNoSecretGoesOnWhole(t *testing.T) {
	text := []byte(strings.Repeat("ordinary text with nothing to hide, line after line\n", 20000))
	shapes := map[string][]byte{
		"gzip of text":     gz(text),
		"zlib of text":     zlibbed(text),
		"a zip of text":    zipped(t, "notes.txt", text),
		"random bytes":     randomBytes(2<<20, 11),
		"gzip of random":   gz(randomBytes(1<<20, 5)),
		"plain JSON":       []byte(strings.Repeat(`{"id": 1234567, "name": "x^y", "v": "1.2.3"},`, 20000)),
		"bzip2 look-alike": []byte(strings.Repeat("BZh9 is not a stream; PK is not a zip. ", 1000)),
	}
	for name, body := range shapes {
		got, err := readRaw(body, 32<<10)
		if err != nil || got != string(body) {
			t.Errorf("%s: %d of %d bytes, error %v; want all of it", name, len(got), len(body), err)
		}
	}
}

func TestDataInAFormatTheGateCannotReadIsRefused(t *testing.T) {
	for name, magic := range map[string][]byte{"xz": []byte("\xfd7zXZ\x00"), "7z": []byte("7z\xbc\xaf\x27\x1c")} {
		body := append(append([]byte("some bytes first"), magic...), randomBytes(200, 1)...)
		_, err := readRaw(body, 32<<10)
		if err == nil || !strings.Contains(err.Error(), "compressed as "+name) {
			t.Errorf("%s: error %v, want it named as unreadable", name, err)
		}
		// In a header too, as base64.
		r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
		r.Header.Set("X-Data", base64.StdEncoding.EncodeToString(body))
		if why := newSecretScanner([]string{testSecret}).refusedRequest(r); !strings.Contains(why, "compressed as "+name) {
			t.Errorf("%s in a header: %q, want it named as unreadable", name, why)
		}
	}
}

func TestACompressedSecretInAHeaderOrTargetIsRefused(t *testing.T) {
	s := newSecretScanner([]string{testSecret})
	packed := base64.URLEncoding.EncodeToString(gz([]byte(testSecret)))
	r := httptest.NewRequest(http.MethodGet, "http://example.com/upload?d="+packed, nil)
	if why := s.refusedRequest(r); why == "" {
		t.Error("gzip in the query: forwarded")
	}
	r = httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
	r.Header.Set("X-Data", base64.StdEncoding.EncodeToString(zlibbed([]byte(testSecret))))
	if why := s.refusedRequest(r); why == "" {
		t.Error("zlib in a header: forwarded")
	}
}

func TestABombIsRefusedOnceItInflatesPastTheLimit(t *testing.T) {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	zeros := make([]byte, 1<<20)
	for i := 0; i < maxInflatedBody>>20+1; i++ {
		w.Write(zeros)
	}
	w.Close()
	start := time.Now()
	_, err := readRaw(buf.Bytes(), 32<<10)
	if !errors.Is(err, errInflatesTooFar) {
		t.Fatalf("error %v, want %v", err, errInflatesTooFar)
	}
	t.Logf("%d bytes inflating to %d MiB refused in %v", buf.Len(), maxInflatedBody>>20+1, time.Since(start))
}

func TestABodyLeavesNoInflaterRunning(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, body := range [][]byte{gz([]byte(testSecret)), gz([]byte("nothing")),
		append(randomBytes(100<<10, 9), zlibbed([]byte("x"))...)} {
		readRaw(body, 4096)
		// A body cut off part-way (its client went away) is closed without being read to its end.
		b := &scannedBody{src: io.NopCloser(bytes.NewReader(append(gz(randomBytes(1<<20, 2)), body...))),
			scanner: newSecretScanner([]string{testSecret})}
		b.Read(make([]byte, 100))
		b.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines left running, %d before", n, before)
	}
}

func inflatedByGo(data []byte) []byte {
	out, _ := io.ReadAll(flate.NewReader(bytes.NewReader(data)))
	return out
}

func TestTheDecoderInflatesWhatGoDoes(t *testing.T) {
	text := []byte(strings.Repeat("a line of text that repeats, with a number: 12345\n", 3000))
	inputs := map[string][]byte{"text": text, "random": randomBytes(200<<10, 4),
		"mixed": append(append(randomBytes(50<<10, 8), text...), randomBytes(1000, 9)...), "empty": nil}
	for name, input := range inputs {
		for _, level := range []int{flate.NoCompression, flate.BestSpeed, flate.BestCompression, flate.HuffmanOnly} {
			var buf bytes.Buffer
			w, _ := flate.NewWriter(&buf, level)
			w.Write(input)
			w.Close()
			var got []byte
			err := inflateTo(bytes.NewReader(buf.Bytes()), func(c byte) bool { got = append(got, c); return true })
			if err != nil || !bytes.Equal(got, input) {
				t.Errorf("%s at level %d: %d of %d bytes, error %v", name, level, len(got), len(input), err)
			}
		}
	}
	// What is not deflate ends in an error, soon.
	for _, junk := range [][]byte{[]byte(`{"json": "text"}`), randomBytes(1<<20, 12)} {
		n := 0
		if err := inflateTo(bytes.NewReader(junk), func(byte) bool { n++; return true }); err == nil && n > len(junk)*1032 {
			t.Errorf("junk of %d bytes inflated to %d", len(junk), n)
		}
	}
}

func TestTheDecoderHandsOnAllThatAStreamsFirstBytesHold(t *testing.T) {
	// What any decoder can make of a stream's first bytes, the gate has read before it passes them on: Go's
	// own decoder holds back up to 32 KiB of it.
	input := append([]byte(strings.Repeat("ordinary text ", 5000)), randomBytes(100<<10, 6)...)
	for _, level := range []int{flate.BestSpeed, flate.BestCompression, flate.HuffmanOnly, flate.NoCompression} {
		stream := deflated(input)
		if level != flate.BestCompression {
			var buf bytes.Buffer
			w, _ := flate.NewWriter(&buf, level)
			w.Write(input)
			w.Close()
			stream = buf.Bytes()
		}
		f := startInflater(rawDeflate, 0, 0)
		var got []byte
		fed := 0
		for _, cut := range []int{1, 2, 100, 997, 5000, 20011, 40000, len(stream) / 2, len(stream) - 3} {
			if cut <= fed || cut > len(stream) {
				continue
			}
			out, _ := f.feed(stream[fed:cut], false, 1<<30)
			for _, o := range out {
				got = append(got, o...)
			}
			fed = cut
			// All of what Go's decoder makes of them, and no byte that is not the input's.
			if want := inflatedByGo(stream[:cut]); len(got) < len(want) || !bytes.Equal(got, input[:len(got)]) {
				t.Fatalf("level %d, first %d bytes: %d bytes handed on (the input's: %v), a decoder makes %d",
					level, cut, len(got), bytes.Equal(got, input[:len(got)]), len(want))
			}
		}
		f.stop()
	}
}

// words is text that compresses well (dynamic codes, matches far back), as ordinary files do.
func words(n int, seed int64) []byte {
	r := rand.New(rand.NewSource(seed))
	var vocabulary []string
	for i := 0; i < 3000; i++ {
		vocabulary = append(vocabulary, base64.RawURLEncoding.EncodeToString(randomBytes(6, int64(i)))[:3+r.Intn(5)])
	}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(vocabulary[r.Intn(len(vocabulary))])
		b.WriteByte(" \n"[r.Intn(2)])
	}
	return b.Bytes()
}

// zlibWindow is data as zlib with a header that names a window of 2^bits bytes.
func zlibWindow(data []byte, bits int) []byte {
	cmf := byte((bits-8)<<4 | 8)
	flg := byte(31 - int(cmf)*256%31)
	if flg == 31 {
		flg = 0
	}
	var sum [4]byte
	a, b := uint32(1), uint32(0)
	for _, c := range data {
		a = (a + uint32(c)) % 65521
		b = (b + a) % 65521
	}
	sum[0], sum[1], sum[2], sum[3] = byte(b>>8), byte(b), byte(a>>8), byte(a)
	return append(append([]byte{cmf, flg}, deflated(data)...), sum[:]...)
}

func TestEveryWayOfCompressingASecretFoundByAttackingItIsRefused(t *testing.T) {
	secret := []byte("key=" + testSecret + "\n")
	long := append(words(700<<10, 1), secret...)
	reserved := gz(secret)
	reserved[3] |= 0x20 // a flag bit gzip reserves, which Python's reader lets be
	storedSays := zipped(t, "k.txt", secret)
	storedSays[8], storedSays[9] = 0, 0 // the local header says stored; the central directory, deflated
	part := "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"k.bin\"\r\n\r\n"
	shapes := map[string][]byte{
		"gzip in gzip, long":              gz(gz(long)),
		"gzip in gzip in gzip":            gz(gz(gz(secret))),
		"zlib with a 512-byte window":     zlibWindow(secret, 9),
		"zlib with a 4 KiB window":        zlibWindow(secret, 12),
		"zlib with a 16 KiB window":       zlibWindow(secret, 14),
		"gzip with a reserved flag":       reserved,
		"a zip entry deflated, said not":  storedSays,
		"raw deflate in a multipart part": append(append([]byte(part), deflated(secret)...), "\r\n--b--\r\n"...),
		"zlib in a zip's stored entry":    zipStored(t, zlibbed(secret)),
	}
	for name, body := range shapes {
		_, err := readRaw(body, 32<<10)
		if !errors.Is(err, errSecretInBody) && !errors.Is(err, errPiecesInBody) {
			t.Errorf("%s: error %v, want the secret refused", name, err)
		}
	}
	randomised := append([]byte{}, bzip2Secret...)
	randomised[14] |= 0x80
	// (Data the gate cannot tell from chance: what LZMA or encryption makes of a secret.)
	lzmaZip := zipped(t, "k.txt", randomBytes(100, 3))
	lzmaZip[8] = 14
	encrypted := zipped(t, "k.txt", randomBytes(100, 4))
	encrypted[6] |= 1
	for name, body := range map[string][]byte{
		"bzip2 with randomised blocks": randomised,
		"LZMA's own format":            append([]byte{0x5d, 0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, randomBytes(40, 1)...),
		"a zip entry of LZMA":          lzmaZip,
		"an encrypted zip entry":       encrypted,
	} {
		_, err := readRaw(body, 32<<10)
		if err == nil || !strings.Contains(err.Error(), "cannot read") {
			t.Errorf("%s: error %v, want it refused as unreadable", name, err)
		}
	}
}

func zipStored(t testing.TB, data []byte) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	f, err := w.CreateHeader(&zip.FileHeader{Name: "x", Method: zip.Store})
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	w.Close()
	return buf.Bytes()
}

func TestManyBombsOrFalseHeadersCostLittle(t *testing.T) {
	bomb := base64.StdEncoding.EncodeToString(zlibbed(make([]byte, 3<<20)))
	var lines []string
	for i := 0; i < 200; i++ {
		lines = append(lines, bomb)
	}
	start := time.Now()
	if _, err := readRaw([]byte(strings.Join(lines, "\n")), 32<<10); !errors.Is(err, errInflatesTooFar) {
		t.Errorf("200 bombs in base64: error %v, want %v", err, errInflatesTooFar)
	}
	t.Logf("200 bombs in base64: %v", time.Since(start))
	start = time.Now()
	fake := bytes.Repeat([]byte("x\x01"), 1<<20)
	if got, err := readRaw(fake, 32<<10); err != nil || got != string(fake) {
		t.Errorf("fake zlib headers: %d bytes, error %v", len(got), err)
	}
	t.Logf("1M fake zlib headers: %v", time.Since(start))
}

func TestALongCompressedStreamEncodedIsReadWhole(t *testing.T) {
	secret := []byte("key=" + testSecret + "\n")
	long := gz(append(words(700<<10, 2), secret...))
	shapes := map[string][]byte{
		"hex":                  []byte(hex.EncodeToString(long)),
		"percent-escaped form": []byte("d=" + url.QueryEscape(string(long))),
		"base64":               []byte(base64.StdEncoding.EncodeToString(long)),
		"base64, wrapped":      []byte(wrap(base64.StdEncoding.EncodeToString(long), 76)),
		"base64url in JSON":    []byte(`{"file": "` + base64.URLEncoding.EncodeToString(long) + `"}`),
		"hex of gzip in gzip":  []byte(hex.EncodeToString(gz(long))),
	}
	for name, body := range shapes {
		_, err := readRaw(body, 32<<10)
		if !errors.Is(err, errSecretInBody) && !errors.Is(err, errPiecesInBody) {
			t.Errorf("%s: error %v, want the secret refused", name, err)
		}
	}
	// The same without the secret goes on whole.
	clean := gz(words(700<<10, 2))
	for name, body := range map[string][]byte{"hex": []byte(hex.EncodeToString(clean)),
		"base64": []byte(base64.StdEncoding.EncodeToString(clean))} {
		if got, err := readRaw(body, 32<<10); err != nil || got != string(body) {
			t.Errorf("%s with no secret: %d of %d bytes, error %v", name, len(got), len(body), err)
		}
	}
}

func wrap(s string, width int) string {
	var lines []string
	for len(s) > width {
		lines, s = append(lines, s[:width]), s[width:]
	}
	return strings.Join(append(lines, s), "\r\n")
}

func TestEveryWayOfTheSecondAttackIsRefused(t *testing.T) {
	secret := []byte("key=" + testSecret + "\n")
	g := gz(secret)
	var plus strings.Builder // percent-escaped, but '+' as itself, which a URL's decoder keeps
	for _, c := range g {
		if c == '+' {
			plus.WriteByte('+')
		} else {
			fmt.Fprintf(&plus, "%%%02X", c)
		}
	}
	// A zip header that says its name takes 64 KiB, so that a search waits on it, before a long stream.
	fakeZip := append([]byte("PK\x03\x04\x14\x00\x00\x00\x08\x00"), make([]byte, 16)...)
	fakeZip = append(fakeZip, 0xff, 0xff, 0xff, 0xff)
	stalled := base64.StdEncoding.EncodeToString(append(fakeZip, gz(append(append(randomBytes(53<<10, 1), secret...),
		randomBytes(40<<10, 2)...))...))
	shapes := map[string][]byte{
		"base64 in gzip":          gz([]byte(base64.StdEncoding.EncodeToString(g))),
		"hex in gzip":             gz([]byte(hex.EncodeToString(g))),
		"escaped in gzip":         gz([]byte("d=" + url.QueryEscape(string(g)))),
		"escaped, + as itself":    []byte("d=" + plus.String()),
		"behind a header to wait": []byte(stalled),
	}
	for name, body := range shapes {
		got, err := readRaw(body, 32<<10)
		if !errors.Is(err, errSecretInBody) && !errors.Is(err, errPiecesInBody) {
			t.Errorf("%s: error %v, want the secret refused", name, err)
		}
		if secretAt := (len(fakeZip) + 10 + 53<<10) * 4 / 3; name == "behind a header to wait" && len(got) > secretAt {
			t.Errorf("%s: %d bytes passed on before the refusal, the secret's among them", name, len(got))
		}
	}
	for name, change := range map[string]func([]byte){
		"says deflate":        func(z []byte) { z[8] = 8 },
		"says version 0xffff": func(z []byte) { z[4], z[5] = 0xff, 0xff },
	} {
		z := zipped(t, "k.txt", randomBytes(100, 3))
		central := bytes.Index(z, zipCentral)
		z[8], z[central+10] = 14, 14 // LZMA, as the central directory says
		change(z)
		if _, err := readRaw(z, 32<<10); err == nil || !strings.Contains(err.Error(), "cannot read") {
			t.Errorf("a zip entry of LZMA whose local header %s: error %v, want it refused as unreadable", name, err)
		}
	}
}

func TestOrdinaryCompressedTrafficGoesOnWhole(t *testing.T) {
	var shapes = map[string][]byte{}
	// A git push's pack: an object's zlib stream after another.
	if git, err := exec.LookPath("git"); err == nil {
		repo := t.TempDir()
		run := func(args ...string) []byte {
			cmd := exec.Command(git, append([]string{"-C", repo, "-c", "user.name=a", "-c", "user.email=a@b"}, args...)...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(args, err)
			}
			return out
		}
		run("init", "-q")
		for i := 0; i < 300; i++ {
			os.WriteFile(filepath.Join(repo, fmt.Sprintf("f%d.txt", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644)
		}
		run("add", ".")
		run("commit", "-qm", "x")
		cmd := exec.Command(git, "-C", repo, "pack-objects", "--stdout")
		cmd.Stdin = bytes.NewReader(run("rev-list", "--objects", "--all"))
		pack, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		shapes["a git pack"] = pack
	}
	// Code in JSON, whose `(St`, `hC` or `8O` are zlib's two bytes by chance.
	var code strings.Builder
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&code, `{"line": "  void m%d(String s, int n) { HashMap<String, Object> hC = new HashMap<>(); X8O(); }"},`, i)
	}
	shapes["code in JSON"] = []byte("[" + code.String() + "{}]")
	// A screenshot, as a file and in a request to the API: its pixels are not read.
	img := image.NewRGBA(image.Rect(0, 0, 1600, 1200))
	r := rand.New(rand.NewSource(3))
	for i := range img.Pix {
		img.Pix[i] = byte(i/4096) ^ byte(r.Intn(4))
	}
	var png bytes.Buffer
	if err := pngEncode(&png, img); err != nil {
		t.Fatal(err)
	}
	shapes["a PNG"] = png.Bytes()
	shapes["a PNG in JSON"] = []byte(`{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "` +
		base64.StdEncoding.EncodeToString(png.Bytes()) + `"}}`)
	for name, body := range shapes {
		start := time.Now()
		got, err := readRaw(body, 32<<10)
		if err != nil || got != string(body) {
			t.Errorf("%s: %d of %d bytes, error %v; want all of it", name, len(got), len(body), err)
		}
		t.Logf("%s: %d bytes in %v", name, len(body), time.Since(start))
	}
}

func TestManyStreamsHandingOnALittleAtATimeAreRefusedSoon(t *testing.T) {
	// 60 zlib streams, each inside the stored blocks of the ones before, then empty stored blocks: every
	// decoder hands on a byte at each look, and each look read every stream's last bytes again.
	stored := func(data []byte) []byte {
		n := len(data)
		return append([]byte{0, byte(n), byte(n >> 8), ^byte(n), ^byte(n >> 8)}, data...)
	}
	body := []byte{0x78, 0x9c}
	for k := 1; k < 60; k++ {
		body = append(body, stored([]byte{0x78, 0x9c})...)
	}
	body = append(body, stored(bytes.Repeat([]byte("abcdefgh "), 1800))...)
	unit := stored([]byte("x"))
	for i := 0; i < (4096-6)/5; i++ {
		unit = append(unit, stored(nil)...)
	}
	for len(body) < 8<<20 {
		body = append(body, unit...)
	}
	start := time.Now()
	src := io.NopCloser(bytes.NewReader(body))
	_, err := drain(&scannedBody{src: &chunkedReader{src, 4 << 10}, scanner: newSecretScanner([]string{testSecret})}, 4<<10)
	if !errors.Is(err, errTooMuchToRead) {
		t.Fatalf("error %v, want %v", err, errTooMuchToRead)
	}
	t.Logf("refused in %v", time.Since(start))
}

// chunkedReader gives at most n bytes a read.
type chunkedReader struct {
	io.ReadCloser
	n int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.ReadCloser.Read(p)
}

var pngEncode = png.Encode
