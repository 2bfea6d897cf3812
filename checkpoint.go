package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Checkpoints off the commit path (SQLite's WAL mode, https://sqlite.org/wal.html).
//
// SQLite by itself checkpoints inside COMMIT: the commit that takes the WAL past
// wal_autocheckpoint pages copies the WAL back into the database file before it returns,
// fsyncing the WAL before and the database file after. Under load that one COMMIT held the
// group-commit writer for 10-20 ms, every job queued behind it waited too, and the two
// fsyncs queued the syncer's next WAL flush behind them at the disk. So the server's write
// connection runs with wal_autocheckpoint=0 and the checkpointer does the work:
//
//   - A background pass (PRAGMA wal_checkpoint(PASSIVE)) on a connection of its own, whenever
//     passFrames frames are not yet copied back. PASSIVE takes no lock a commit needs: the
//     writer commits, and the syncer flushes, while it copies.
//   - A rewind. SQLite reuses the WAL from its start only when a write transaction begins
//     while every frame is copied back, which a background pass racing the writer never
//     leaves behind: the WAL would grow without end (it reached 80 MB). So when the WAL
//     holds rewindFrames frames, the checkpointer asks the writer, which runs one more pass
//     between two transactions, after handing its last batch to the syncer and before it
//     begins the next: that pass only copies what was committed since the background pass,
//     and the next transaction starts the WAL over. The jobs of the batch being flushed are
//     answered as usual; the next batch starts that much later.
//   - A bound. Should a reader hold an old snapshot (a long backup, another process) so that
//     passes cannot finish, the WAL grows; past forceFrames the writer's pass is a RESTART
//     checkpoint, which waits (the connection's busy timeout, 200 ms) for readers to move on.
//
// Durability does not change: SQLite syncs the WAL before it copies anything and the database
// file before the WAL can be reused, and a checkpoint never decides whether a job succeeded.
// A pass that fails or is interrupted leaves every frame in the WAL, where readers find them
// and the next pass copies them; the jobs it ran beside were committed and flushed as before.
// Where the WAL-index cannot be read (no -shm mapping), SQLite checkpoints itself as before.

// checkpointer runs the WAL checkpoints of one store.
type checkpointer struct {
	db  *sql.DB    // one connection of its own
	hdr *walHeader // the WAL-index, for the WAL's length and how much of it is copied back

	// Bounds in frames (tests lower them).
	passFrames   atomic.Uint32 // a background pass starts when this many frames are not copied back
	rewindFrames atomic.Uint32 // a WAL of this many frames is rewound
	forceFrames  atomic.Uint32 // past this many, the rewind waits for readers (RESTART)

	wake       chan struct{} // the writer committed (capacity 1)
	quit, done chan struct{}
	stop       context.CancelFunc // interrupts a pass in progress when the store closes
	ctx        context.Context

	mu     sync.Mutex                                    // one pass at a time: SQLite answers a second one SQLITE_BUSY
	rewind atomic.Bool                                   // the writer is to run a pass before its next transaction
	hook   atomic.Pointer[func(kind, mode string) error] // tests inject failing or slow passes here
	log    atomic.Pointer[slog.Logger]                   // where failures are reported; nil: nowhere
	warned atomic.Int64                                  // when a failure was last reported (unix ns)

	passes, catchUps durStats     // background passes; the writer's passes before a rewind
	failures         atomic.Int64 // passes that returned an error
	rewinds          atomic.Int64 // times the WAL was found started over
	maxFrames        atomic.Int64 // the longest the WAL was, in frames
}

// WAL bounds, in bytes of WAL (converted to frames of the database's page size). SQLite's own
// autocheckpoint runs at 1,000 pages (2 MB with 2 KiB pages).
const (
	ckptPassBytes   = 2 << 20  // not yet copied back: start a background pass
	ckptRewindBytes = 8 << 20  // the WAL's length at which it is rewound
	ckptForceBytes  = 32 << 20 // the rewind waits for readers: the WAL stays far under 64 MB
)

// ckptBusyTimeout bounds how long a RESTART pass waits for readers and for writers of other
// processes; a pass that times out is retried after later commits.
const ckptBusyTimeout = 200

// newCheckpointer opens the checkpointer's connection to path and starts its goroutine.
func newCheckpointer(path string, hdr *walHeader) (*checkpointer, error) {
	db, err := sql.Open("sqlite", ckptDSN(path))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	var page int
	if err := db.QueryRow("PRAGMA page_size").Scan(&page); err != nil || page < 512 {
		db.Close()
		return nil, fmt.Errorf("page size %d: %v", page, err)
	}
	frames := func(bytes int) uint32 { return uint32(bytes / (page + walFrameHeader)) }
	c := &checkpointer{db: db, hdr: hdr, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	c.passFrames.Store(frames(ckptPassBytes))
	c.rewindFrames.Store(frames(ckptRewindBytes))
	c.forceFrames.Store(frames(ckptForceBytes))
	c.ctx, c.stop = context.WithCancel(context.Background())
	go c.loop()
	return c, nil
}

// walFrameHeader is the size of a WAL frame's header; a frame is that and one page.
const walFrameHeader = 24

// ckptDSN is the checkpointer's DSN: synchronous=NORMAL makes SQLite sync the WAL before a
// pass copies and the database file after; wal_autocheckpoint=0 on every connection that
// commits leaves checkpoints to the checkpointer.
func ckptDSN(path string) string {
	return dsnSync(path, "normal") + fmt.Sprintf("&_pragma=busy_timeout(%d)&_pragma=wal_autocheckpoint(0)", ckptBusyTimeout)
}

// committed wakes the checkpointer after a commit; it never blocks the writer.
func (c *checkpointer) committed() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// loop decides, after commits, whether to copy the WAL back and whether to have it rewound.
// A rewind that did not happen (a reader still used the WAL's start, or the pass failed) is
// asked for again once the WAL has grown by a quarter of the rewind bound, then by half, then
// by the whole bound: a long reader must not cost the writer a pass per batch.
func (c *checkpointer) loop() {
	defer close(c.done)
	// The WAL's length at the last wake; the length at which to ask for a rewind again, and by
	// how much to defer the ask after that (0, 0: at rewindFrames, by a quarter of it).
	var last, next, step uint32
	for {
		select {
		case <-c.quit:
			return
		case <-c.wake:
			if c.ctx.Err() != nil { // closing
				return
			}
		}
		mx, backfilled := c.hdr.frames()
		if int64(mx) > c.maxFrames.Load() {
			c.maxFrames.Store(int64(mx))
		}
		if mx < last {
			c.rewinds.Add(1)
			next, step = 0, 0
		}
		last = mx
		if c.rewind.Load() { // the writer's pass comes next
			continue
		}
		backlog := mx - min(backfilled, mx) // the two are read apart: a restart can come between
		bound := c.rewindFrames.Load()
		rewind := mx >= max(next, bound)
		if backlog >= c.passFrames.Load() || rewind && backfilled < mx {
			c.pass("background", "PASSIVE", &c.passes)
		}
		if rewind {
			if step == 0 {
				step = max(bound/4, 1)
			}
			next, step = mx+step, min(step*2, bound)
			c.rewind.Store(true)
		}
	}
}

// between is called by the writer with no transaction open, before it begins the next one.
// When a rewind is due it runs a pass there, so that the transaction it begins next finds the
// WAL copied back and starts it over. The writer answers no job here: the batch committed
// before is the syncer's, and the next one has not begun. The request stays up during the
// pass, so that no background pass starts beside it.
func (c *checkpointer) between() {
	if !c.rewind.Load() {
		return
	}
	mx, backfilled := c.hdr.frames()
	switch {
	case mx < c.rewindFrames.Load(): // rewound since the request
	case mx >= c.forceFrames.Load():
		c.pass("rewind", "RESTART", &c.catchUps)
	case backfilled < mx: // else the background pass copied everything: nothing committed since
		c.pass("rewind", "PASSIVE", &c.catchUps)
	}
	c.rewind.Store(false)
}

// pass runs one checkpoint in mode, for kind ("background" or "rewind"). A failure is
// counted and reported, never passed on: the frames stay in the WAL, and a later pass copies
// them.
func (c *checkpointer) pass(kind, mode string, stats *durStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t0 := time.Now()
	var err error
	if hook := c.hook.Load(); hook != nil {
		err = (*hook)(kind, mode)
	}
	if err == nil {
		var busy, logFrames, copied int64
		err = c.db.QueryRowContext(c.ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &copied)
		if err == nil && busy != 0 && mode != "PASSIVE" {
			err = fmt.Errorf("readers or another writer kept the %s checkpoint from finishing", mode)
		}
	}
	stats.add(t0)
	if err != nil {
		c.failures.Add(1)
		c.report(mode, err)
	}
}

// report logs a failed pass, at most once a minute.
func (c *checkpointer) report(mode string, err error) {
	log := c.log.Load()
	now := time.Now().UnixNano()
	if log == nil || now-c.warned.Load() < int64(time.Minute) || c.ctx.Err() != nil {
		return
	}
	c.warned.Store(now)
	mx, backfilled := c.hdr.frames()
	log.Warn("WAL checkpoint failed; the next one retries (the WAL grows meanwhile)", "mode", mode,
		"wal_frames", mx, "copied_back", backfilled, "failures", c.failures.Load(), "cause", err)
}

// close stops the checkpointer, interrupting a pass in progress. The writer must have stopped:
// it runs passes on this connection too.
func (c *checkpointer) close() {
	c.stop()
	close(c.quit)
	<-c.done
	c.db.Close()
}
