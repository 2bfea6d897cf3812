package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
)

// Group commit, pipelined.
//
// All writes go through one goroutine that owns the write connection. Concurrent jobs share
// one transaction (each in its own savepoint, so a job that fails is rolled back alone) and
// one sync. The write connection runs with synchronous=NORMAL, so COMMIT only writes the WAL
// frames; the syncer goroutine then fsyncs the WAL file and only after that answers the
// batch's jobs. While that fsync is in flight the writer already runs the next jobs in a new
// transaction, and commits them as soon as the syncer is free again: statement execution
// overlaps the disk flush, and the batch grows to whatever arrived during one flush.
//
// Durability is the same as synchronous=FULL: nothing is acknowledged before the fsync that
// covers its commit returned. A reader may see a commit before it is durable; every such
// write belongs to a request that has not been answered yet, and SQLite itself syncs the
// WAL before each checkpoint.

// writeJob is one transaction's worth of work submitted to the writer.
type writeJob struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	one  bool // fn runs at most one statement, which SQLite undoes by itself if it fails
	done chan error
}

// writer owns the write connection and the open batch.
type writer struct {
	db         *sql.DB
	exec       func(tx *sql.Tx, q string) error // runs a prepared statement in tx
	wal        *walSync                         // nil: COMMIT itself syncs (synchronous=FULL)
	watch      commitWatcher                    // told about every batch; nil: nobody listens
	keeper     walKeeper                        // checkpoints the WAL; nil: SQLite does, inside COMMIT
	jobs       chan writeJob
	quit       chan struct{}
	done       chan struct{}
	commitHook atomic.Pointer[func() error] // tests inject a failing commit here
	syncHook   atomic.Pointer[func() error] // tests inject a failing fsync here

	batches, jobsRun atomic.Int64 // how many commits, how many jobs: their ratio is the batch size
	commitTime       durStats     // COMMIT statements
	syncTime         durStats     // WAL flushes
}

// durStats counts how long an operation took: how often, in total, at most, and how often it
// took 2, 4, … 128 ms or more; the latest slow ones are kept with their start. Benchmarks
// report them, to tell which operation makes a tail.
type durStats struct {
	n, total, max atomic.Int64 // count; nanoseconds in total and at most
	over          [7]atomic.Int64
	slowMu        sync.Mutex
	slow          []slowOp // the latest operations of slowOpAt or more, at most maxSlowOps
}

// slowOp is one slow operation: when it started and how long it took.
type slowOp struct {
	start time.Time
	took  time.Duration
}

const (
	slowOpAt   = 16 * time.Millisecond
	maxSlowOps = 256
)

// add records one operation that started at t0.
func (d *durStats) add(t0 time.Time) {
	ns := int64(time.Since(t0))
	if time.Duration(ns) >= slowOpAt {
		d.slowMu.Lock()
		if len(d.slow) >= maxSlowOps {
			d.slow = append(d.slow[:0], d.slow[1:]...)
		}
		d.slow = append(d.slow, slowOp{t0, time.Duration(ns)})
		d.slowMu.Unlock()
	}
	d.n.Add(1)
	d.total.Add(ns)
	for {
		m := d.max.Load()
		if ns <= m || d.max.CompareAndSwap(m, ns) {
			break
		}
	}
	for i := range d.over {
		if ns < int64(2*time.Millisecond)<<i {
			break
		}
		d.over[i].Add(1)
	}
}

// maxBatch bounds how many jobs share one commit.
const maxBatch = 128

// commitWatcher follows each batch's transaction; all three run on the writer goroutine.
type commitWatcher interface {
	begun(tx *sql.Tx)      // first in the transaction: the write lock is held, nothing written
	committing(tx *sql.Tx) // last in the transaction, before COMMIT
	committed()            // after a successful COMMIT
}

// walKeeper keeps the WAL short (checkpoint.go); both run on the writer goroutine.
type walKeeper interface {
	committed() // after a successful COMMIT: the WAL grew
	between()   // no transaction is open: the next one begins when this returns
}

func newWriter(db *sql.DB, wal *walSync, exec func(tx *sql.Tx, q string) error, watch commitWatcher, keeper walKeeper) *writer {
	w := &writer{db: db, exec: exec, wal: wal, watch: watch, keeper: keeper, jobs: make(chan writeJob, maxBatch), quit: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

// errClosing answers jobs that reach a writer that has stopped.
var errClosing = errors.New("the database is closing")

// do submits fn and waits for its outcome. one: fn runs at most one statement (see run).
func (w *writer) do(ctx context.Context, fn func(*sql.Tx) error, one bool) error {
	j := writeJob{ctx: ctx, fn: fn, one: one, done: make(chan error, 1)}
	select {
	case w.jobs <- j:
	case <-w.done:
		return errClosing
	case <-ctx.Done():
		return ctx.Err()
	}
	// Wait even if ctx ends: the job may already be committed. A job still queued when the
	// writer stopped never ran; one it ran was answered before it stopped (done is buffered).
	select {
	case err := <-j.done:
		return err
	case <-w.done:
		select {
		case err := <-j.done:
			return err
		default:
			return errClosing
		}
	}
}

// batch is the open transaction and the jobs that ran in it, with their outcomes.
type batch struct {
	tx      *sql.Tx
	jobs    []writeJob
	results []error
}

// fail answers every job of the batch with err.
func (b *batch) fail(err error) {
	for _, j := range b.jobs {
		j.done <- err
	}
}

// loop runs jobs as they arrive into the open batch, and commits it as soon as the syncer is
// free (at once, when commits sync themselves) or the batch is full. Committing first and
// letting queued jobs start the next batch measured better than draining the queue into the
// current batch: a job waits for one flush less.
func (w *writer) loop() {
	defer close(w.done)
	idle := make(chan struct{}, 1) // holds a token while no fsync is in flight
	idle <- struct{}{}
	flushes := make(chan *batch)
	go w.syncer(flushes, idle)
	defer close(flushes)
	var b *batch
	commit := func() {
		w.commit(b, flushes, idle)
		b = nil
	}
	for {
		if b == nil || len(b.jobs) >= maxBatch {
			if b != nil {
				<-idle
				commit()
			}
			select {
			case j := <-w.jobs:
				b = w.run(b, j)
			case <-w.quit:
				<-idle // the last flush is answered before the writer reports done
				return
			}
			continue
		}
		select { // the syncer is free: commit now, the queued jobs start the next batch
		case <-idle:
			commit()
			continue
		default:
		}
		select {
		case j := <-w.jobs:
			b = w.run(b, j)
		case <-idle:
			commit()
		case <-w.quit:
			<-idle
			commit()
			<-idle
			return
		}
	}
}

// run executes one job in b (beginning a transaction when b is nil) and returns the batch,
// nil when nothing is left open.
func (w *writer) run(b *batch, j writeJob) *batch {
	if err := j.ctx.Err(); err != nil {
		j.done <- err
		return b
	}
	if b == nil {
		if w.keeper != nil {
			w.keeper.between()
		}
		tx, err := w.db.BeginTx(context.Background(), nil)
		if err != nil {
			j.done <- err
			return nil
		}
		b = &batch{tx: tx}
		if w.watch != nil {
			w.watch.begun(tx)
		}
	}
	// The first job needs no savepoint: if it fails, the whole transaction is rolled back.
	// Nor does a job of one statement: a statement that fails is undone by SQLite itself
	// (its statement journal), and the transaction goes on. SAVEPOINT and RELEASE were a
	// sixth of the writer's time under client_credentials load.
	first := len(b.jobs) == 0
	bare := first || j.one
	if !bare {
		if err := w.exec(b.tx, "SAVEPOINT job"); err != nil {
			return w.abort(b, j, err)
		}
	}
	err := runJob(j.fn, b.tx)
	var ce commitErr
	failed := err != nil && !errors.As(err, &ce)
	switch {
	case first && failed:
		b.tx.Rollback()
		j.done <- err
		return nil
	case bare && failed:
		if !statementOnly(err) { // SQLite may have rolled the whole transaction back
			return w.abort(b, j, err)
		}
		j.done <- err
		return b
	case bare:
	case failed:
		if rerr := w.exec(b.tx, "ROLLBACK TO job"); rerr != nil {
			return w.abort(b, j, rerr)
		}
		fallthrough
	default:
		if rerr := w.exec(b.tx, "RELEASE job"); rerr != nil {
			return w.abort(b, j, rerr)
		}
	}
	b.jobs = append(b.jobs, j)
	b.results = append(b.results, err)
	return b
}

// statementOnly tells whether a failed one-statement job left the transaction as it was: a
// constraint failure undoes its statement alone, and an error that is not SQLite's means fn
// refused without writing. Other SQLite errors (I/O, a full disk, no memory) may roll the
// whole transaction back (https://sqlite.org/lang_transaction.html, "Response To Errors
// Within A Transaction"), so the batch is given up.
func statementOnly(err error) bool {
	var se *sqlite.Error
	return !errors.As(err, &se) || se.Code()&0xff == sqliteConstraint
}

// sqliteConstraint is SQLITE_CONSTRAINT, the primary result code of a constraint failure.
const sqliteConstraint = 19

// abort rolls b back when its savepoint bookkeeping failed, or a job without a savepoint
// failed in a way that may have ended the transaction, answering its jobs and j.
func (w *writer) abort(b *batch, j writeJob, err error) *batch {
	b.tx.Rollback()
	b.fail(err)
	j.done <- err
	return nil
}

// commit commits b and hands it to the syncer, which answers its jobs. The caller holds the
// idle token, which the syncer gives back when it is done with b.
func (w *writer) commit(b *batch, flushes chan<- *batch, idle chan struct{}) {
	w.batches.Add(1)
	w.jobsRun.Add(int64(len(b.jobs)))
	if hook := w.commitHook.Load(); hook != nil {
		if err := (*hook)(); err != nil {
			b.tx.Rollback()
			b.fail(err)
			idle <- struct{}{}
			return
		}
	}
	if w.watch != nil {
		w.watch.committing(b.tx)
	}
	t0 := time.Now()
	err := b.tx.Commit()
	w.commitTime.add(t0)
	if err != nil {
		b.fail(err)
		idle <- struct{}{}
		return
	}
	if w.watch != nil {
		w.watch.committed()
	}
	if w.keeper != nil {
		w.keeper.committed()
	}
	flushes <- b
}

// syncer makes each committed batch durable, then answers its jobs.
func (w *writer) syncer(flushes <-chan *batch, idle chan<- struct{}) {
	for b := range flushes {
		var err error
		if hook := w.syncHook.Load(); hook != nil {
			err = (*hook)()
		}
		if err == nil && w.wal != nil {
			t0 := time.Now()
			err = w.wal.sync()
			w.syncTime.add(t0)
		}
		if err != nil {
			// Committed but maybe not on disk: the requests fail (their writes may stay
			// visible, like those of any request whose answer was lost) and are retried.
			b.fail(fmt.Errorf("sync the write-ahead log: %w", err))
		} else {
			for i, j := range b.jobs {
				j.done <- b.results[i]
			}
		}
		idle <- struct{}{}
	}
}

// runJob runs one job, turning a panic into an error so the writer survives it.
func runJob(fn func(*sql.Tx) error, tx *sql.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write job panicked: %v", p)
		}
	}()
	return fn(tx)
}

// close stops the writer after committing and syncing the batch in progress.
func (w *writer) close() {
	close(w.quit)
	<-w.done
}

// walSync fsyncs the database's write-ahead log through its own descriptor.
type walSync struct {
	path string
	f    *os.File
}

// openWALSync opens path's -wal file (SQLite creates it when the first connection opens a
// WAL-mode database) and syncs its directory once, so that the file itself survives a crash.
func openWALSync(dbPath string) (*walSync, error) {
	w := &walSync{path: dbPath + "-wal"}
	if err := w.reopen(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *walSync) reopen() error {
	f, err := os.OpenFile(w.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if w.f != nil {
		w.f.Close()
	}
	w.f = f
	return syncDir(w.path)
}

// sync flushes the WAL to disk. SQLite deletes the -wal file when the last connection to the
// database closes; the server always holds one, but a replaced file is detected and reopened.
func (w *walSync) sync() error {
	cur, err1 := w.f.Stat()
	now, err2 := os.Stat(w.path)
	if err1 != nil || err2 != nil || !os.SameFile(cur, now) {
		if err := w.reopen(); err != nil {
			return err
		}
	}
	return fdatasync(w.f)
}

func (w *walSync) close() {
	if w != nil && w.f != nil {
		w.f.Close()
	}
}

// syncDir fsyncs a file's directory, so that its entry survives a crash. Best effort: not every
// system can open a directory for syncing, and SQLite created the file long before.
func syncDir(file string) error {
	d, err := os.Open(filepath.Dir(file))
	if err != nil {
		return nil
	}
	defer d.Close()
	d.Sync()
	return nil
}
