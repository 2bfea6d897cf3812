//go:build linux

package main

import "syscall"

// statfsType is the file system type (f_type) of the directory dir.
func statfsType(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Type), nil
}
