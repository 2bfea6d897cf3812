package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// openPty returns the master and the terminal side of a new pseudo-terminal.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Skipf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Skipf("ptsname: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestHiddenPrompt: on a terminal the password is asked twice with echo off.
func TestHiddenPrompt(t *testing.T) {
	master, tty := openPty(t)
	if !isTerminal(tty) {
		t.Fatal("isTerminal(pty) = false")
	}
	if f, err := os.CreateTemp(t.TempDir(), "x"); err == nil && isTerminal(f) {
		t.Fatal("isTerminal(regular file) = true")
	}
	// Everything the terminal shows, collected until the test closes the pty.
	var mu sync.Mutex
	var shown []byte
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			shown = append(shown, buf[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	var prompt bytes.Buffer
	done := make(chan string, 1)
	go func() {
		pw, err := readPassword(tty, &prompt)
		if err != nil {
			pw = "error: " + err.Error()
		}
		done <- pw
	}()
	time.Sleep(100 * time.Millisecond)
	master.Write([]byte("s3cret-password\n"))
	time.Sleep(100 * time.Millisecond)
	master.Write([]byte("s3cret-password\n"))
	var got string
	select {
	case got = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("readPassword did not return")
	}
	if got != "s3cret-password" {
		t.Fatalf("readPassword = %q", got)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(string(shown), "s3cret") {
		t.Fatalf("the password was echoed: %q", shown)
	}
	if !strings.Contains(prompt.String(), "Password: ") || !strings.Contains(prompt.String(), "Password again: ") {
		t.Fatalf("prompts = %q", prompt.String())
	}
}
