package main

import (
	"errors"
	"io"
)

// inflate decodes a deflate stream (RFC 1951) as its bytes arrive, handing on each byte it decodes before it
// reads more input. Go's compress/flate keeps what it decodes until its 32 KiB window fills or a block ends,
// so the bytes that make a secret could go on before the gate saw what they decode to; a server reading the
// same bytes could decode them at once.

var (
	errNotDeflate = errors.New("not a deflate stream")
	errEnough     = errors.New("enough decoded")
)

// bitReader reads a deflate stream's bits, least significant first.
type bitReader struct {
	src  io.ByteReader
	bits uint32
	n    uint
}

func (b *bitReader) take(n uint) (uint32, error) {
	for b.n < n {
		c, err := b.src.ReadByte()
		if err != nil {
			return 0, err
		}
		b.bits |= uint32(c) << b.n
		b.n += 8
	}
	v := b.bits & (1<<n - 1)
	b.bits >>= n
	b.n -= n
	return v, nil
}

// align drops what is left of the byte being read: a stored block begins on a byte.
func (b *bitReader) align() {
	b.bits >>= b.n % 8
	b.n -= b.n % 8
}

// huffman is a canonical Huffman code: how many codes have each length, and the symbols in code order.
type huffman struct {
	count  [16]int
	symbol []int
}

func newHuffman(lengths []uint8) (*huffman, error) {
	h := &huffman{symbol: make([]int, 0, len(lengths))}
	for _, l := range lengths {
		h.count[l]++
	}
	h.count[0] = 0
	left := 1
	for l := 1; l < 16; l++ {
		left = left<<1 - h.count[l]
		if left < 0 {
			return nil, errNotDeflate // more codes of a length than there are
		}
	}
	for l := 1; l < 16; l++ {
		for symbol, length := range lengths {
			if int(length) == l {
				h.symbol = append(h.symbol, symbol)
			}
		}
	}
	return h, nil
}

// decode reads one symbol, a bit at a time: codes of each length follow the shorter ones, in order.
func (h *huffman) decode(b *bitReader) (int, error) {
	code, first, index := 0, 0, 0
	for l := 1; l < 16; l++ {
		bit, err := b.take(1)
		if err != nil {
			return 0, err
		}
		code |= int(bit)
		if count := h.count[l]; code-first < count {
			return h.symbol[index+code-first], nil
		}
		index += h.count[l]
		first = (first + h.count[l]) << 1
		code <<= 1
	}
	return 0, errNotDeflate
}

// The lengths and distances that symbols 257-285 and 0-29 stand for: a base and how many extra bits follow.
var lengthBase, lengthExtra, distBase, distExtra [30]int

// fixedLiterals and fixedDistances are the codes of a block with fixed codes.
var fixedLiterals, fixedDistances *huffman

func init() {
	base := 3
	for i := 0; i < 28; i++ {
		if i >= 8 {
			lengthExtra[i] = (i - 4) / 4
		}
		lengthBase[i] = base
		base += 1 << lengthExtra[i]
	}
	lengthBase[28] = 258
	base = 1
	for i := 0; i < 30; i++ {
		if i >= 4 {
			distExtra[i] = (i - 2) / 2
		}
		distBase[i] = base
		base += 1 << distExtra[i]
	}
	var lengths [288]uint8
	for i := range lengths {
		switch {
		case i < 144:
			lengths[i] = 8
		case i < 256:
			lengths[i] = 9
		case i < 280:
			lengths[i] = 7
		default:
			lengths[i] = 8
		}
	}
	fixedLiterals, _ = newHuffman(lengths[:])
	var dists [30]uint8
	for i := range dists {
		dists[i] = 5
	}
	fixedDistances, _ = newHuffman(dists[:])
}

// inflater writes what it decodes to out, which is handed on before more input is read.
type deflateDecoder struct {
	in     bitReader
	window []byte // made at the first byte: most tries at a stream fail before it
	pos    int    // bytes decoded in all
	out    func(byte) bool
	enough bool // out said stop
}

// inflateTo decodes the deflate stream in src to its last block, giving each byte to out (until it says stop).
func inflateTo(src io.ByteReader, out func(byte) bool) error {
	d := &deflateDecoder{in: bitReader{src: src}, out: out}
	for {
		final, err := d.in.take(1)
		if err != nil {
			return err
		}
		kind, err := d.in.take(2)
		if err != nil {
			return err
		}
		switch kind {
		case 0:
			err = d.stored()
		case 1:
			err = d.codes(fixedLiterals, fixedDistances)
		case 2:
			var literals, distances *huffman
			if literals, distances, err = d.dynamicCodes(); err == nil {
				err = d.codes(literals, distances)
			}
		default:
			err = errNotDeflate
		}
		if err != nil || final == 1 {
			return err
		}
		if d.enough {
			return errEnough
		}
	}
}

func (d *deflateDecoder) put(c byte) {
	if d.window == nil {
		d.window = make([]byte, windowSize)
	}
	d.window[d.pos&(windowSize-1)] = c
	d.pos++
	if !d.out(c) {
		d.enough = true
	}
}

const windowSize = 1 << 15

func (d *deflateDecoder) stored() error {
	d.in.align()
	length, err := d.in.take(16)
	if err != nil {
		return err
	}
	complement, err := d.in.take(16)
	if err != nil {
		return err
	}
	if length != ^complement&0xffff {
		return errNotDeflate
	}
	for ; length > 0 && !d.enough; length-- {
		c, err := d.in.take(8)
		if err != nil {
			return err
		}
		d.put(byte(c))
	}
	return nil
}

// codeLengthOrder is the order a dynamic block gives the lengths of its code-length code in.
var codeLengthOrder = [19]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

func (d *deflateDecoder) dynamicCodes() (*huffman, *huffman, error) {
	var counts [3]uint32
	for i, bits := range []uint{5, 5, 4} {
		v, err := d.in.take(bits)
		if err != nil {
			return nil, nil, err
		}
		counts[i] = v
	}
	literalCount, distanceCount, codeLengthCount := int(counts[0])+257, int(counts[1])+1, int(counts[2])+4
	if literalCount > 286 || distanceCount > 30 {
		return nil, nil, errNotDeflate
	}
	var codeLengths [19]uint8
	for i := 0; i < codeLengthCount; i++ {
		v, err := d.in.take(3)
		if err != nil {
			return nil, nil, err
		}
		codeLengths[codeLengthOrder[i]] = uint8(v)
	}
	lengthCode, err := newHuffman(codeLengths[:])
	if err != nil {
		return nil, nil, err
	}
	lengths := make([]uint8, 0, literalCount+distanceCount)
	for len(lengths) < literalCount+distanceCount {
		symbol, err := lengthCode.decode(&d.in)
		if err != nil {
			return nil, nil, err
		}
		if symbol < 16 {
			lengths = append(lengths, uint8(symbol))
			continue
		}
		value, bits, times := uint8(0), uint(3), 11 // 18: 11-138 zeros
		switch symbol {
		case 16: // the last length again, 3-6 times
			if len(lengths) == 0 {
				return nil, nil, errNotDeflate
			}
			value, bits, times = lengths[len(lengths)-1], 2, 3
		case 17: // 3-10 zeros
			bits, times = 3, 3
		default:
			bits = 7
		}
		extra, err := d.in.take(bits)
		if err != nil {
			return nil, nil, err
		}
		times += int(extra)
		if len(lengths)+times > literalCount+distanceCount {
			return nil, nil, errNotDeflate
		}
		for ; times > 0; times-- {
			lengths = append(lengths, value)
		}
	}
	if lengths[256] == 0 { // no code to end the block
		return nil, nil, errNotDeflate
	}
	literals, err := newHuffman(lengths[:literalCount])
	if err != nil {
		return nil, nil, err
	}
	distances, err := newHuffman(lengths[literalCount:])
	return literals, distances, err
}

func (d *deflateDecoder) codes(literals, distances *huffman) error {
	for {
		symbol, err := literals.decode(&d.in)
		if err != nil {
			return err
		}
		if d.enough {
			return errEnough
		}
		switch {
		case symbol < 256:
			d.put(byte(symbol))
			continue
		case symbol == 256:
			return nil
		case symbol > 285:
			return errNotDeflate
		}
		symbol -= 257
		extra, err := d.in.take(uint(lengthExtra[symbol]))
		if err != nil {
			return err
		}
		length := lengthBase[symbol] + int(extra)
		if symbol, err = distances.decode(&d.in); err != nil {
			return err
		}
		if symbol >= 30 {
			return errNotDeflate
		}
		if extra, err = d.in.take(uint(distExtra[symbol])); err != nil {
			return err
		}
		distance := distBase[symbol] + int(extra)
		if distance > d.pos || distance > windowSize {
			return errNotDeflate
		}
		for ; length > 0; length-- {
			d.put(d.window[(d.pos-distance)&(windowSize-1)])
		}
	}
}

// skipGzipHeader reads a gzip member's header (RFC 1952), up to its deflate stream.
func skipGzipHeader(src io.ByteReader) error {
	var head [10]byte
	for i := range head {
		c, err := src.ReadByte()
		if err != nil {
			return err
		}
		head[i] = c
	}
	if head[0] != 0x1f || head[1] != 0x8b || head[2] != 8 { // reserved flags are let be, as Python's reader does
		return errNotDeflate
	}
	flags := head[3]
	if flags&4 != 0 { // extra field
		lo, err := src.ReadByte()
		if err != nil {
			return err
		}
		hi, err := src.ReadByte()
		if err != nil {
			return err
		}
		for n := int(lo) | int(hi)<<8; n > 0; n-- {
			if _, err := src.ReadByte(); err != nil {
				return err
			}
		}
	}
	for _, flag := range []byte{8, 16} { // a name, a comment: each ends in a zero byte
		if flags&flag == 0 {
			continue
		}
		for {
			c, err := src.ReadByte()
			if err != nil {
				return err
			}
			if c == 0 {
				break
			}
		}
	}
	if flags&2 != 0 { // the header's CRC
		for i := 0; i < 2; i++ {
			if _, err := src.ReadByte(); err != nil {
				return err
			}
		}
	}
	return nil
}
