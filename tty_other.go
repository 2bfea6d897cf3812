//go:build !linux

package main

import (
	"bufio"
	"os"
	"strings"
)

// isTerminal reports whether f is an interactive terminal (character device).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// readHidden reads one line; this platform has no portable way to turn echo off here.
func readHidden(f *os.File) (string, error) {
	line, err := bufio.NewReader(f).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}
