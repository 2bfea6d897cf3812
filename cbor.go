package main

// A minimal CBOR decoder (RFC 8949) for what WebAuthn hands us: the attestation object, the
// COSE public key inside the authenticator data, and the authenticator's extension outputs.
// It reads unsigned and negative integers, byte and text strings, arrays, maps and the simple
// values false, true, null and undefined. It refuses what WebAuthn never needs — tags,
// floating-point numbers, indefinite lengths — and bounds everything an attacker controls:
// nesting depth, item counts and lengths are checked against the bytes actually present
// before anything is allocated, and a map may not repeat a key. CTAP2's canonical encoding
// is not required (some authenticators do not follow it to the letter).

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// cborMaxDepth bounds nesting: a COSE key in an attestation object is three levels deep.
const cborMaxDepth = 8

// cborMaxItems bounds how many data items one decode may produce in total.
const cborMaxItems = 4096

// cborMap is a decoded CBOR map, in the order of the encoding. Keys are int64, string or
// (for exotic encodings) []byte; a lookup goes by int or string key.
type cborMap []cborEntry

// cborEntry is one key and value of a cborMap.
type cborEntry struct {
	Key, Value any
}

// get returns the value stored under an int key (COSE labels) or a string key.
func (m cborMap) get(key any) (any, bool) {
	for _, e := range m {
		switch k := key.(type) {
		case int:
			if v, ok := e.Key.(int64); ok && v == int64(k) {
				return e.Value, true
			}
		case string:
			if v, ok := e.Key.(string); ok && v == k {
				return e.Value, true
			}
		}
	}
	return nil, false
}

// cborUndefined is CBOR's "undefined" simple value.
type cborUndefined struct{}

// errCBOR is wrapped by every decoding error.
var errCBOR = errors.New("malformed CBOR")

// cborDecoder reads one data item at a time from a byte slice.
type cborDecoder struct {
	b     []byte
	off   int
	items int
}

// decodeCBOR decodes the first data item of b and returns it with the bytes after it.
func decodeCBOR(b []byte) (v any, rest []byte, err error) {
	d := &cborDecoder{b: b}
	v, err = d.item(0)
	if err != nil {
		return nil, nil, err
	}
	return v, b[d.off:], nil
}

// decodeCBORAll decodes b, which must hold exactly one data item.
func decodeCBORAll(b []byte) (any, error) {
	v, rest, err := decodeCBOR(b)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the data item", errCBOR, len(rest))
	}
	return v, nil
}

// fail makes a decoding error that says where and what.
func (d *cborDecoder) fail(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", errCBOR, d.off, fmt.Sprintf(format, args...))
}

// head reads an item's initial byte and argument (RFC 8949 §3).
func (d *cborDecoder) head() (major byte, info byte, arg uint64, err error) {
	if d.off >= len(d.b) {
		return 0, 0, 0, d.fail("unexpected end of data")
	}
	ib := d.b[d.off]
	d.off++
	major, info = ib>>5, ib&0x1f
	switch {
	case info < 24:
		return major, info, uint64(info), nil
	case info <= 27:
		n := 1 << (info - 24) // 1, 2, 4 or 8 bytes
		if len(d.b)-d.off < n {
			return 0, 0, 0, d.fail("truncated argument")
		}
		for _, c := range d.b[d.off : d.off+n] {
			arg = arg<<8 | uint64(c)
		}
		d.off += n
		return major, info, arg, nil
	case info == 31:
		return 0, 0, 0, d.fail("indefinite lengths are not accepted")
	default:
		return 0, 0, 0, d.fail("reserved additional information %d", info)
	}
}

// item decodes one data item at nesting depth depth.
func (d *cborDecoder) item(depth int) (any, error) {
	if depth > cborMaxDepth {
		return nil, d.fail("nested more than %d levels", cborMaxDepth)
	}
	if d.items++; d.items > cborMaxItems {
		return nil, d.fail("more than %d data items", cborMaxItems)
	}
	major, info, arg, err := d.head()
	if err != nil {
		return nil, err
	}
	switch major {
	case 0: // unsigned integer
		if arg > 1<<63-1 {
			return nil, d.fail("integer out of range")
		}
		return int64(arg), nil
	case 1: // negative integer: -1 - arg
		if arg > 1<<63-1 {
			return nil, d.fail("integer out of range")
		}
		return -1 - int64(arg), nil
	case 2, 3: // byte string, text string
		if arg > uint64(len(d.b)-d.off) {
			return nil, d.fail("string of %d bytes with %d left", arg, len(d.b)-d.off)
		}
		s := d.b[d.off : d.off+int(arg)]
		d.off += int(arg)
		if major == 3 {
			if !utf8.Valid(s) {
				return nil, d.fail("text string is not UTF-8")
			}
			return string(s), nil
		}
		return append([]byte(nil), s...), nil
	case 4: // array
		if arg > uint64(len(d.b)-d.off) { // every item takes at least one byte
			return nil, d.fail("array of %d items with %d bytes left", arg, len(d.b)-d.off)
		}
		out := make([]any, 0, int(arg))
		for range int(arg) {
			v, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case 5: // map
		if arg > uint64(len(d.b)-d.off)/2 {
			return nil, d.fail("map of %d entries with %d bytes left", arg, len(d.b)-d.off)
		}
		out := make(cborMap, 0, int(arg))
		for range int(arg) {
			k, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			switch k.(type) {
			case int64, string, []byte:
			default:
				return nil, d.fail("map key of type %T", k)
			}
			for _, e := range out {
				if sameKey(e.Key, k) {
					return nil, d.fail("map key %v repeated", k)
				}
			}
			v, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, cborEntry{k, v})
		}
		return out, nil
	case 6:
		return nil, d.fail("tags are not accepted")
	default: // 7: simple values and floats
		switch {
		case info == 20:
			return false, nil
		case info == 21:
			return true, nil
		case info == 22:
			return nil, nil
		case info == 23:
			return cborUndefined{}, nil
		case info >= 25 && info <= 27:
			return nil, d.fail("floating-point numbers are not accepted")
		default:
			return nil, d.fail("unassigned simple value %d", arg)
		}
	}
}

// sameKey reports whether two map keys are equal.
func sameKey(a, b any) bool {
	switch x := a.(type) {
	case int64:
		y, ok := b.(int64)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case []byte:
		y, ok := b.([]byte)
		return ok && string(x) == string(y)
	}
	return false
}
