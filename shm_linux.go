package main

import (
	"encoding/binary"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// walHeader maps the first page of a WAL-mode database's -shm file read-only. Its first 48
// bytes are the WAL-index header, which every commit by any connection of any process
// rewrites (iChange, mxFrame, checksums; SQLite file format §4.5). Two equal reads with no
// change in between mean no commit happened: the caches can skip the generation query.
type walHeader struct {
	mem     []byte
	ino     uint64
	checked atomic.Int64 // when the file was last found to be the mapped one (unix ns)
}

// inodeCheckEvery is how often read makes sure the -shm file is still the mapped one. SQLite
// only deletes it when the last connection closes, which cannot happen while the server
// holds its own; the check is for an operator deleting or replacing files under a running
// server, and a stat on every request cost a system call each.
const inodeCheckEvery = time.Second

// mapWALHeader maps path's -shm file; nil when it cannot (callers then always query).
func mapWALHeader(dbPath string) *walHeader {
	f, err := os.Open(dbPath + "-shm")
	if err != nil {
		return nil
	}
	defer f.Close()
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil || st.Size < 4096 {
		return nil
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil
	}
	return &walHeader{mem: mem, ino: st.Ino}
}

// read copies the header; false when the -shm file was replaced (the mapping is stale).
func (h *walHeader) read(dbPath string, into *[48]byte) bool {
	if now := time.Now().UnixNano(); now-h.checked.Load() >= int64(inodeCheckEvery) {
		var st syscall.Stat_t
		if syscall.Stat(dbPath+"-shm", &st) != nil || st.Ino != h.ino {
			return false
		}
		h.checked.Store(now)
	}
	copy(into[:], h.mem[:48])
	return true
}

func (h *walHeader) close() { syscall.Munmap(h.mem) }

// frames reads how many frames the WAL holds (mxFrame) and how many of them are copied back
// into the database file (nBackfill, in the checkpoint information after the header's two
// copies): SQLite file format §4.5. A racing commit or checkpoint makes it one step stale.
func (h *walHeader) frames() (mxFrame, backfilled uint32) {
	return binary.NativeEndian.Uint32(h.mem[16:20]), binary.NativeEndian.Uint32(h.mem[96:100])
}
