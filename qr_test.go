package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQRKnownSymbols compares the encoder with symbols made by libqrencode 4.1.1
// (`qrencode -8 -l M|L -m 0 -t ASCII -r NAME.in`, kept in testdata/qr): for each input the
// version, the level and the mask chosen must agree and every module must be the same.
func TestQRKnownSymbols(t *testing.T) {
	ins, _ := filepath.Glob("testdata/qr/*.in")
	if len(ins) < 8 {
		t.Fatalf("only %d reference symbols in testdata/qr", len(ins))
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(in, ".in") + ".txt")
			if err != nil {
				t.Fatal(err)
			}
			lv := qrM
			if strings.HasSuffix(name, "-L") {
				lv = qrL
			}
			size := len(bytes.TrimRight(want[:bytes.IndexByte(want, '\n')], "\n")) / 2
			v := (size - 17) / 4
			// The mask libqrencode chose is the one whose symbol matches.
			refMask := -1
			for m := range 8 {
				q, err := encodeQRWith(data, v, lv, m)
				if err != nil {
					t.Fatal(err)
				}
				if q.text() == string(want) {
					refMask = m
				}
			}
			if refMask < 0 {
				q, _ := encodeQRWith(data, v, lv, 0)
				t.Fatalf("no mask reproduces the reference symbol (version %d)\ngot (mask 0):\n%s\nwant:\n%s", v, q.text(), want)
			}
			var auto *qrCode
			if lv == qrM {
				auto, err = encodeQR(data)
			} else {
				auto, err = encodeQRWith(data, v, lv, -1)
			}
			if err != nil {
				t.Fatal(err)
			}
			if auto.Version != v || auto.Mask != refMask {
				t.Errorf("encodeQR chose version %d mask %d; libqrencode version %d mask %d", auto.Version, auto.Mask, v, refMask)
			}
			if auto.text() != string(want) {
				t.Errorf("encodeQR's symbol differs from the reference")
			}
		})
	}
}

// TestQRLimits: the largest input of version 10 fits (at L), one byte more is refused, and an
// empty input still makes a symbol.
func TestQRLimits(t *testing.T) {
	if q, err := encodeQR(bytes.Repeat([]byte("a"), 213)); err != nil || q.Version != 10 || q.Level != qrM {
		t.Errorf("213 bytes: %v, %+v; want version 10 at M", err, q)
	}
	if q, err := encodeQR(bytes.Repeat([]byte("a"), 271)); err != nil || q.Version != 10 || q.Level != qrL {
		t.Errorf("271 bytes: %v; want version 10 at L", err)
	}
	if _, err := encodeQR(bytes.Repeat([]byte("a"), 272)); err != errQRTooLong {
		t.Errorf("272 bytes: err = %v; want errQRTooLong", err)
	}
	if q, err := encodeQR(nil); err != nil || q.Version != 1 {
		t.Errorf("empty: %v", err)
	}
	if _, err := encodeQRWith([]byte("hello"), 11, qrM, 0); err == nil {
		t.Error("version 11 accepted")
	}
}

// TestQRSVG: the SVG has the symbol's size plus the quiet zone, one path, no script or style,
// and escapes its title.
func TestQRSVG(t *testing.T) {
	q, err := encodeQR([]byte("otpauth://totp/x:y?secret=AAAA&issuer=x"))
	if err != nil {
		t.Fatal(err)
	}
	svg := q.svg(`a "title" <b>`)
	for _, want := range []string{`viewBox="0 0 37 37"`, `fill="#fff"`, `<path fill="#000" d="M4 4h7v1h-7z`, `aria-label="a &quot;title&quot; &lt;b&gt;"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q: %.300s", want, svg)
		}
	}
	for _, bad := range []string{"<script", "style=", "<b>"} {
		if strings.Contains(svg, bad) {
			t.Errorf("svg contains %q", bad)
		}
	}
}

// TestReedSolomon checks the error correction of ISO 18004 Annex I's worked example
// (version 1-M, "01234567"): its 10 error correction codewords.
func TestReedSolomon(t *testing.T) {
	data := []byte{0x10, 0x20, 0x0c, 0x56, 0x61, 0x80, 0xec, 0x11, 0xec, 0x11, 0xec, 0x11, 0xec, 0x11, 0xec, 0x11}
	want := []byte{0xa5, 0x24, 0xd4, 0xc1, 0xed, 0x36, 0xc7, 0x87, 0x2c, 0x55}
	if got := rsRemainder(data, rsGenerator(10)); !bytes.Equal(got, want) {
		t.Errorf("rsRemainder = % x; want % x", got, want)
	}
}
