//go:build !linux

package main

import "errors"

// statfsType is not implemented here: network file systems are not detected.
func statfsType(string) (int64, error) { return 0, errors.New("not supported") }
