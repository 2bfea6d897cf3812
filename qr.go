package main

// A small QR code encoder (ISO/IEC 18004:2015) for otpauth:// URIs, drawn as SVG, so that the
// TOTP enrolment page needs no network and no library. Byte mode only, error correction level
// M (or L when M does not fit), versions 1 to 10 (up to 213 bytes at M, 271 at L: an otpauth
// URI with a long issuer and username fits). The steps are the standard's: bit stream (§7.4),
// Reed-Solomon error correction over GF(256) with the polynomial 0x11d (§7.5), interleaved
// blocks (§7.6), function patterns (§6.3), data placement (§7.7.3), the mask with the lowest
// penalty score (§7.8.3) and the BCH-coded format and version information (§7.9, §7.10).

import (
	"errors"
	"fmt"
	"strings"
)

// qrLevel is an error correction level.
type qrLevel int

const (
	qrL qrLevel = iota // recovers ~7%
	qrM                // recovers ~15%
)

// qrBlocks is one version's block structure at one level (ISO 18004 Table 9).
type qrBlocks struct {
	ec       int // error correction codewords per block
	n1, d1   int // blocks of the first group and their data codewords
	n2, d2   int // blocks of the second group (d1+1 data codewords each)
	capBytes int // byte-mode capacity
}

// qrTable holds versions 1-10 at L and M.
var qrTable = [2][11]qrBlocks{
	qrL: {{},
		{7, 1, 19, 0, 0, 17}, {10, 1, 34, 0, 0, 32}, {15, 1, 55, 0, 0, 53}, {20, 1, 80, 0, 0, 78}, {26, 1, 108, 0, 0, 106},
		{18, 2, 68, 0, 0, 134}, {20, 2, 78, 0, 0, 154}, {24, 2, 97, 0, 0, 192}, {30, 2, 116, 0, 0, 230}, {18, 2, 68, 2, 69, 271}},
	qrM: {{},
		{10, 1, 16, 0, 0, 14}, {16, 1, 28, 0, 0, 26}, {26, 1, 44, 0, 0, 42}, {18, 2, 32, 0, 0, 62}, {24, 2, 43, 0, 0, 84},
		{16, 4, 27, 0, 0, 106}, {18, 4, 31, 0, 0, 122}, {22, 2, 38, 2, 39, 152}, {22, 3, 36, 2, 37, 180}, {26, 4, 43, 1, 44, 213}},
}

// qrAlign is the alignment pattern centre coordinates of versions 1-10 (Annex E).
var qrAlign = [11][]int{{}, {}, {6, 18}, {6, 22}, {6, 26}, {6, 30}, {6, 34}, {6, 22, 38}, {6, 24, 42}, {6, 26, 46}, {6, 28, 50}}

// qrCode is a QR symbol: size×size modules, true for dark.
type qrCode struct {
	Version int
	Level   qrLevel
	Mask    int
	size    int
	mod     [][]bool
	fn      [][]bool // function patterns, which data and masks leave alone
}

// errQRTooLong: the data does not fit in version 10 at level L.
var errQRTooLong = errors.New("too long for a QR code of version 10")

// encodeQR makes the smallest symbol holding data at level M, or at L when M cannot hold it,
// with the mask the penalty rules choose.
func encodeQR(data []byte) (*qrCode, error) {
	for _, lv := range []qrLevel{qrM, qrL} {
		for v := 1; v <= 10; v++ {
			if len(data) <= qrTable[lv][v].capBytes {
				return encodeQRWith(data, v, lv, -1)
			}
		}
	}
	return nil, errQRTooLong
}

// encodeQRWith makes a symbol of version v and level lv; mask -1 picks the best mask.
func encodeQRWith(data []byte, v int, lv qrLevel, mask int) (*qrCode, error) {
	if v < 1 || v > 10 || len(data) > qrTable[lv][v].capBytes {
		return nil, fmt.Errorf("%d bytes do not fit version %d", len(data), v)
	}
	q := &qrCode{Version: v, Level: lv, size: 17 + 4*v}
	q.mod, q.fn = qrGrid(q.size), qrGrid(q.size)
	q.drawFunctionPatterns()
	q.drawCodewords(qrCodewords(data, v, lv))
	if mask < 0 {
		best := 0
		for m := range 8 {
			q.applyMask(m)
			q.drawFormat(m)
			if p := q.penalty(); m == 0 || p < best {
				best, mask = p, m
			}
			q.applyMask(m) // undo: masks are XOR
		}
	}
	q.Mask = mask
	q.applyMask(mask)
	q.drawFormat(mask)
	return q, nil
}

// qrGrid makes an n×n grid of light modules.
func qrGrid(n int) [][]bool {
	g := make([][]bool, n)
	for i := range g {
		g[i] = make([]bool, n)
	}
	return g
}

// set places a function module at column x, row y.
func (q *qrCode) set(x, y int, dark bool) {
	q.mod[y][x], q.fn[y][x] = dark, true
}

// dark reports the module at column x, row y.
func (q *qrCode) dark(x, y int) bool { return q.mod[y][x] }

// ---- bit stream and error correction

// qrCodewords is the final codeword sequence: byte-mode segment, terminator and padding
// (§7.4), split into blocks, each with its Reed-Solomon codewords, interleaved (§7.6).
func qrCodewords(data []byte, v int, lv qrLevel) []byte {
	t := qrTable[lv][v]
	capacity := t.n1*t.d1 + t.n2*t.d2
	var bits []bool
	put := func(val, n int) {
		for i := n - 1; i >= 0; i-- {
			bits = append(bits, val>>i&1 == 1)
		}
	}
	put(0b0100, 4) // byte mode
	if v <= 9 {
		put(len(data), 8)
	} else {
		put(len(data), 16)
	}
	for _, b := range data {
		put(int(b), 8)
	}
	put(0, min(4, capacity*8-len(bits))) // terminator
	for len(bits)%8 != 0 {
		bits = append(bits, false)
	}
	cw := make([]byte, 0, capacity)
	for i := 0; i < len(bits); i += 8 {
		var b byte
		for _, bit := range bits[i : i+8] {
			b <<= 1
			if bit {
				b |= 1
			}
		}
		cw = append(cw, b)
	}
	for pad := byte(0xec); len(cw) < capacity; pad ^= 0xec ^ 0x11 {
		cw = append(cw, pad)
	}
	// Blocks, each with its error correction.
	var blocks, ecs [][]byte
	gen := rsGenerator(t.ec)
	off := 0
	for i := range t.n1 + t.n2 {
		n := t.d1
		if i >= t.n1 {
			n = t.d2
		}
		blocks = append(blocks, cw[off:off+n])
		ecs = append(ecs, rsRemainder(cw[off:off+n], gen))
		off += n
	}
	out := make([]byte, 0, capacity+t.ec*(t.n1+t.n2))
	for i := range max(t.d1, t.d2) {
		for _, b := range blocks {
			if i < len(b) {
				out = append(out, b[i])
			}
		}
	}
	for i := range t.ec {
		for _, e := range ecs {
			out = append(out, e[i])
		}
	}
	return out
}

// gfMul multiplies in GF(2^8) modulo x^8 + x^4 + x^3 + x^2 + 1 (0x11d).
func gfMul(a, b byte) byte {
	var p byte
	for b != 0 {
		if b&1 != 0 {
			p ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= 0x1d
		}
		b >>= 1
	}
	return p
}

// rsGenerator is the generator polynomial (x - α^0)(x - α^1)…(x - α^(n-1)), coefficients
// from the highest power down, the leading 1 left out.
func rsGenerator(n int) []byte {
	g := make([]byte, n)
	g[n-1] = 1
	root := byte(1)
	for range n {
		for j := range n {
			g[j] = gfMul(g[j], root)
			if j+1 < n {
				g[j] ^= g[j+1]
			}
		}
		root = gfMul(root, 2)
	}
	return g
}

// rsRemainder is data·x^n mod the generator: the error correction codewords.
func rsRemainder(data, gen []byte) []byte {
	r := make([]byte, len(gen))
	for _, b := range data {
		f := b ^ r[0]
		copy(r, r[1:])
		r[len(r)-1] = 0
		for i, g := range gen {
			r[i] ^= gfMul(g, f)
		}
	}
	return r
}

// ---- function patterns and placement

// drawFunctionPatterns draws finders, separators, timing and alignment patterns, the dark
// module, and reserves the format and version areas.
func (q *qrCode) drawFunctionPatterns() {
	n := q.size
	for i := range n { // timing patterns (§6.3.5)
		q.set(6, i, i%2 == 0)
		q.set(i, 6, i%2 == 0)
	}
	for _, c := range [][2]int{{3, 3}, {n - 4, 3}, {3, n - 4}} { // finders with separators (§6.3.3)
		for dy := -4; dy <= 4; dy++ {
			for dx := -4; dx <= 4; dx++ {
				x, y := c[0]+dx, c[1]+dy
				if x < 0 || x >= n || y < 0 || y >= n {
					continue
				}
				d := max(abs(dx), abs(dy))
				q.set(x, y, d != 2 && d != 4)
			}
		}
	}
	al := qrAlign[q.Version]
	for i, cx := range al { // alignment patterns (§6.3.6), not over the finders
		for j, cy := range al {
			if i == 0 && j == 0 || i == 0 && j == len(al)-1 || i == len(al)-1 && j == 0 {
				continue
			}
			for dy := -2; dy <= 2; dy++ {
				for dx := -2; dx <= 2; dx++ {
					q.set(cx+dx, cy+dy, max(abs(dx), abs(dy)) != 1)
				}
			}
		}
	}
	q.drawFormat(0)     // reserves the format areas and sets the dark module; redrawn after masking
	if q.Version >= 7 { // version information (§7.10)
		rem := q.Version
		for range 12 {
			rem = rem<<1 ^ (rem>>11)*0x1f25
		}
		bits := q.Version<<12 | rem
		for i := range 18 {
			dark := bits>>i&1 == 1
			a, b := n-11+i%3, i/3
			q.set(a, b, dark)
			q.set(b, a, dark)
		}
	}
}

// abs is |x|.
func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// drawFormat writes both copies of the format information (§7.9): the level and mask,
// BCH(15,5)-coded and masked with 0x5412.
func (q *qrCode) drawFormat(mask int) {
	lv := map[qrLevel]int{qrL: 1, qrM: 0}[q.Level]
	data := lv<<3 | mask
	rem := data
	for range 10 {
		rem = rem<<1 ^ (rem>>9)*0x537
	}
	bits := (data<<10 | rem) ^ 0x5412
	bit := func(i int) bool { return bits>>i&1 == 1 }
	n := q.size
	for i := 0; i <= 5; i++ {
		q.set(8, i, bit(i))
	}
	q.set(8, 7, bit(6))
	q.set(8, 8, bit(7))
	q.set(7, 8, bit(8))
	for i := 9; i < 15; i++ {
		q.set(14-i, 8, bit(i))
	}
	for i := range 8 {
		q.set(n-1-i, 8, bit(i))
	}
	for i := 8; i < 15; i++ {
		q.set(8, n-15+i, bit(i))
	}
	q.set(8, n-8, true) // the dark module (§7.9.1)
}

// drawCodewords places the codewords in two-module columns from the bottom right, up and
// down in turn, skipping the vertical timing pattern (§7.7.3); remainder bits stay light.
func (q *qrCode) drawCodewords(cw []byte) {
	n, i := q.size, 0
	for right := n - 1; right >= 1; right -= 2 {
		if right == 6 {
			right = 5
		}
		for vert := range n {
			for j := range 2 {
				x := right - j
				y := vert
				if (right+1)&2 == 0 {
					y = n - 1 - vert
				}
				if !q.fn[y][x] && i < len(cw)*8 {
					q.mod[y][x] = cw[i>>3]>>(7-i&7)&1 == 1
					i++
				}
			}
		}
	}
}

// applyMask flips the data modules that mask pattern m selects (§7.8.2, Table 10).
func (q *qrCode) applyMask(m int) {
	for y := range q.size {
		for x := range q.size {
			if q.fn[y][x] {
				continue
			}
			var f bool
			switch m {
			case 0:
				f = (x+y)%2 == 0
			case 1:
				f = y%2 == 0
			case 2:
				f = x%3 == 0
			case 3:
				f = (x+y)%3 == 0
			case 4:
				f = (x/3+y/2)%2 == 0
			case 5:
				f = x*y%2+x*y%3 == 0
			case 6:
				f = (x*y%2+x*y%3)%2 == 0
			case 7:
				f = ((x+y)%2+x*y%3)%2 == 0
			}
			if f {
				q.mod[y][x] = !q.mod[y][x]
			}
		}
	}
}

// penalty is the §7.8.3 score of the symbol as it stands: runs of five or more (N1 = 3),
// 2×2 blocks (N2 = 3), finder-like 1:1:3:1:1 patterns with four light modules on one side
// (N3 = 40; the quiet zone counts as light), and the dark share away from 50% (N4 = 10).
func (q *qrCode) penalty() int {
	n, p := q.size, 0
	line := make([]bool, n)
	for dir := range 2 {
		for a := range n {
			for b := range n {
				if dir == 0 {
					line[b] = q.mod[a][b]
				} else {
					line[b] = q.mod[b][a]
				}
			}
			p += lineRuns(line) + lineFinders(line)
		}
	}
	dark := 0
	for y := range n {
		for x := range n {
			if q.mod[y][x] {
				dark++
			}
			if x+1 < n && y+1 < n {
				c := q.mod[y][x]
				if q.mod[y][x+1] == c && q.mod[y+1][x] == c && q.mod[y+1][x+1] == c {
					p += 3
				}
			}
		}
	}
	// N4: 10 for each whole 5% step the dark share lies away from 50% (the share is odd/odd,
	// never exactly 50%).
	total := n * n
	k := abs(dark*20-total*10) / total
	return p + k*10
}

// lineRuns scores N1 in one row or column: 3 + (length - 5) for each run of five or more.
func lineRuns(l []bool) int {
	p, run := 0, 1
	for i := 1; i <= len(l); i++ {
		if i < len(l) && l[i] == l[i-1] {
			run++
			continue
		}
		if run >= 5 {
			p += 3 + run - 5
		}
		run = 1
	}
	return p
}

// lineFinders scores N3 in one row or column: 40 for each dark-light-dark-light-dark
// sequence of runs in the ratio 1:1:3:1:1 (at any scale f) with a light run of at least 4f,
// or the quiet zone, before or after it.
func lineFinders(l []bool) int {
	var runs []int // alternating run lengths, starting with a light run (0 when l starts dark)
	if l[0] {
		runs = append(runs, 0)
	}
	for i := 0; i < len(l); {
		j := i
		for j < len(l) && l[j] == l[i] {
			j++
		}
		runs = append(runs, j-i)
		i = j
	}
	p := 0
	for i := 3; i+2 < len(runs); i += 2 { // dark runs are at odd indices
		f := runs[i] / 3
		if runs[i]%3 != 0 || runs[i-2] != f || runs[i-1] != f || runs[i+1] != f || runs[i+2] != f {
			continue
		}
		before := i == 3 || runs[i-3] >= 4*f            // runs[0] touches the quiet zone
		after := i+3 >= len(runs)-1 || runs[i+3] >= 4*f // so does the last run
		if before || after {
			p += 40
		}
	}
	return p
}

// ---- output

// svg draws the symbol with a four-module quiet zone as an SVG image: one path of the dark
// modules, black on a white square whatever the page's colours (scanners need the contrast).
func (q *qrCode) svg(title string) string {
	const quiet = 4
	w := q.size + 2*quiet
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="qr" viewBox="0 0 %d %d" width="%d" height="%d" shape-rendering="crispEdges" role="img" aria-label="%s">`,
		w, w, w*5, w*5, strings.NewReplacer(`&`, "&amp;", `"`, "&quot;", "<", "&lt;", ">", "&gt;").Replace(title))
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, w, w)
	for y := range q.size {
		for x := 0; x < q.size; x++ {
			if !q.mod[y][x] {
				continue
			}
			run := 1
			for x+run < q.size && q.mod[y][x+run] {
				run++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", x+quiet, y+quiet, run, run)
			x += run - 1
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String()
}

// text draws the symbol as rows of '#' (dark) and ' ' (light), two characters per module,
// as `qrencode -t ASCII -m 0` does; the tests compare symbols in this form.
func (q *qrCode) text() string {
	var b strings.Builder
	for y := range q.size {
		for x := range q.size {
			if q.mod[y][x] {
				b.WriteString("##")
			} else {
				b.WriteString("  ")
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
