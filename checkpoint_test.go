package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of the checkpointer (checkpoint.go): checkpoints run beside the writer, the WAL is
// rewound, and a checkpoint that fails, hangs or is cut short by Close neither loses a job
// nor answers one twice. No timing: where a test waits for the checkpointer, it waits for a
// condition (with a deadline only to fail instead of hanging).

// ckptServer is a test server whose checkpointer works on a tiny WAL: a pass after 4 frames
// not copied back, a rewind at 16.
func ckptServer(t *testing.T) (*testServer, *checkpointer) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the checkpointer reads the mmapped WAL-index (Linux)")
	}
	ts := newTestServer(t)
	c := ts.s.store.ckpt
	if c == nil {
		t.Fatal("no checkpointer on Linux")
	}
	c.passFrames.Store(4)
	c.rewindFrames.Store(16)
	c.forceFrames.Store(1 << 30)
	return ts, c
}

// writeRows inserts n settings rows named prefix-i, each as its own job, from 8 goroutines,
// and fails the test unless each job was answered once, with success.
func writeRows(t *testing.T, st *store, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	var answered, failed atomic.Int64
	next := atomic.Int64{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				_, err := st.exec(context.Background(), "INSERT INTO settings(name, value) VALUES(?, ?)", fmt.Sprintf("%s-%d", prefix, i), []byte("x"))
				answered.Add(1)
				if err != nil {
					failed.Add(1)
					t.Errorf("write %s-%d: %v", prefix, i, err)
				}
			}
		}()
	}
	wg.Wait()
	if answered.Load() != int64(n) || failed.Load() != 0 {
		t.Fatalf("%d writes: %d answered, %d failed", n, answered.Load(), failed.Load())
	}
}

// countRows counts the settings rows named prefix-….
func countRows(t *testing.T, st *store, prefix string) int {
	t.Helper()
	var n int
	if err := st.db.QueryRow("SELECT count(*) FROM settings WHERE name LIKE ? || '-%'", prefix).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitWriting polls cond while writing rows (commits are what wake the checkpointer), failing
// after a generous deadline.
func waitWriting(t *testing.T, st *store, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 2000 {
			var mx, bf uint32
			if c := st.ckpt; c != nil {
				mx, bf = c.hdr.frames()
			}
			t.Fatalf("never: %s (the WAL holds %d frames, %d copied back; rewind asked %v)", what, mx, bf, st.ckpt != nil && st.ckpt.rewind.Load())
		}
		if _, err := st.exec(context.Background(), "INSERT OR REPLACE INTO settings(name, value) VALUES('tick', ?)", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCheckpointsBesideTheWriter: the write connection never checkpoints inside COMMIT; the
// checkpointer copies the WAL back and has it rewound, and the WAL stays near its bound.
func TestCheckpointsBesideTheWriter(t *testing.T) {
	ts, c := ckptServer(t)
	st := ts.s.store
	var auto int
	if err := st.wdb.QueryRow("PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("the write connection's wal_autocheckpoint = %d, %v; want 0", auto, err)
	}
	writeRows(t, st, "a", 400)
	waitWriting(t, st, "a rewind", func() bool { return c.rewinds.Load() > 0 })
	if c.passes.n.Load() == 0 || c.failures.Load() != 0 {
		t.Fatalf("%d background passes, %d failures", c.passes.n.Load(), c.failures.Load())
	}
	mx, _ := c.hdr.frames()
	if mx >= uint32(c.maxFrames.Load()) {
		t.Fatalf("after a rewind the WAL holds %d frames; it held %d", mx, c.maxFrames.Load())
	}
	if n := countRows(t, st, "a"); n != 400 {
		t.Fatalf("%d rows; want 400", n)
	}
	if got := integrityOf(t, st); got != "ok" {
		t.Fatalf("integrity_check = %q", got)
	}
}

// integrityOf runs PRAGMA integrity_check through the store's read pool.
func integrityOf(t *testing.T, st *store) string {
	t.Helper()
	var res string
	if err := st.db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		return err.Error()
	}
	return res
}

// TestCheckpointDoesNotHoldCommits: while a background pass hangs, writes still commit and
// are answered; the hung pass neither loses nor repeats any of them.
func TestCheckpointDoesNotHoldCommits(t *testing.T) {
	ts, c := ckptServer(t)
	st := ts.s.store
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hang := func(kind, mode string) error {
		if kind == "background" {
			once.Do(func() { close(entered) })
			<-release
		}
		return nil
	}
	c.hook.Store(&hang)
	writeRows(t, st, "warm", 50) // enough frames for a background pass
	<-entered
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeRows(t, st, "b", 200)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("writes waited for a hung checkpoint")
	}
	if c.rewind.Load() {
		t.Fatal("a rewind was asked for while its background pass still ran")
	}
	close(release)
	c.hook.Store(nil)
	if n := countRows(t, st, "b"); n != 200 {
		t.Fatalf("%d rows; want 200", n)
	}
	waitWriting(t, st, "a rewind after the pass came back", func() bool { return c.rewinds.Load() > 0 })
}

// TestCheckpointFailure: checkpoints that fail (background and the writer's own) leave every
// job answered once and stored; the WAL grows meanwhile, and is rewound once they succeed.
func TestCheckpointFailure(t *testing.T) {
	ts, c := ckptServer(t)
	st := ts.s.store
	var rewindTried atomic.Int64
	fail := func(kind, mode string) error {
		if kind == "rewind" {
			rewindTried.Add(1)
		}
		return errors.New("injected checkpoint failure")
	}
	c.hook.Store(&fail)
	logs := &syncBuffer{}
	st.reportTo(slog.New(slog.NewTextHandler(logs, nil)))
	writeRows(t, st, "c", 300)
	waitWriting(t, st, "the writer's pass before a rewind", func() bool { return rewindTried.Load() > 0 })
	if c.rewinds.Load() != 0 {
		t.Fatalf("%d rewinds while every checkpoint failed", c.rewinds.Load())
	}
	if mx, backfilled := c.hdr.frames(); backfilled != 0 || mx < 16 {
		t.Fatalf("with every checkpoint failing the WAL holds %d frames, %d copied back", mx, backfilled)
	}
	if c.failures.Load() == 0 || !strings.Contains(logs.String(), "WAL checkpoint failed") || strings.Count(logs.String(), "\n") != 1 {
		t.Fatalf("%d failures, logged (once a minute at most):\n%s", c.failures.Load(), logs)
	}
	if n := countRows(t, st, "c"); n != 300 {
		t.Fatalf("%d rows; want 300", n)
	}
	c.hook.Store(nil)
	writeRows(t, st, "d", 100)
	waitWriting(t, st, "a rewind after the fault", func() bool { return c.rewinds.Load() > 0 })
	if n := countRows(t, st, "c") + countRows(t, st, "d"); n != 400 {
		t.Fatalf("%d rows; want 400", n)
	}
	if got := integrityOf(t, st); got != "ok" {
		t.Fatalf("integrity_check = %q", got)
	}
}

// TestRewindPassHangs: while the writer's own pass hangs, jobs queue (none is answered before
// it ran and was flushed, none is lost); when it comes back they all run, once each.
func TestRewindPassHangs(t *testing.T) {
	ts, c := ckptServer(t)
	st := ts.s.store
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hang := func(kind, mode string) error {
		if kind == "rewind" {
			once.Do(func() { close(entered) })
			<-release
		}
		return nil
	}
	c.hook.Store(&hang)
	warm := make(chan struct{})
	go func() { // writes until the writer is held (one write is then held with it)
		defer close(warm)
		for i := 0; ; i++ {
			select {
			case <-entered:
				return
			default:
			}
			if _, err := st.exec(context.Background(), "INSERT INTO settings(name, value) VALUES(?, ?)", fmt.Sprint("warm-", i), []byte("x")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	<-entered // the writer is in its pass, between two transactions
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeRows(t, st, "e", 100)
	}()
	select {
	case <-done:
		t.Fatal("writes were answered while the writer was held in its pass")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-done
	<-warm
	c.hook.Store(nil)
	if n := countRows(t, st, "e"); n != 100 {
		t.Fatalf("%d rows; want 100", n)
	}
}

// TestCheckpointCutShortByClose: a pass still running when the store closes is interrupted;
// Close returns, every answered write is in the file, and the file reopens intact.
func TestCheckpointCutShortByClose(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the checkpointer reads the mmapped WAL-index (Linux)")
	}
	path := t.TempDir() + "/oauthd.db"
	st, err := openStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	c := st.ckpt
	c.passFrames.Store(4)
	c.rewindFrames.Store(1 << 30)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hang := func(kind, mode string) error {
		once.Do(func() { close(entered) })
		<-release
		return nil // then runs the checkpoint, on a connection whose context Close cancelled
	}
	c.hook.Store(&hang)
	writeRows(t, st, "warm", 50)
	<-entered
	writeRows(t, st, "f", 100)
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	for !errors.Is(c.ctx.Err(), context.Canceled) { // Close has stopped the writer and cancels the pass
		runtime.Gosched()
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	st, err = openStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := countRows(t, st, "f"); n != 100 {
		t.Fatalf("after reopening: %d rows; want 100", n)
	}
	if got := integrityOf(t, st); got != "ok" {
		t.Fatalf("integrity_check = %q", got)
	}
}

// ckptChildEnv names the variable that makes the test binary a writer for
// TestKilledMidCheckpoint: it holds the database's path.
const ckptChildEnv = "OAUTHD_TEST_CKPT_CHILD"

// ckptChildMain writes rows from 8 goroutines, through a checkpointer working on a tiny WAL
// (a pass every 4 frames, a rewind every 16), and prints the name of each row whose write
// was acknowledged, until it is killed.
func ckptChildMain(path string) int {
	st, err := openStore(context.Background(), path)
	if err != nil || st.ckpt == nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	st.ckpt.passFrames.Store(4)
	st.ckpt.rewindFrames.Store(16)
	st.ckpt.forceFrames.Store(64) // some rewinds are RESTART checkpoints
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				name := fmt.Sprintf("k-%d-%d-%d", os.Getpid(), g, i)
				if _, err := st.exec(context.Background(), "INSERT INTO settings(name, value) VALUES(?, ?)", name, make([]byte, 300)); err != nil {
					fmt.Fprintln(os.Stderr, "write:", err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintln(out, name)
				out.Flush()
				if g == 0 && i%50 == 49 {
					c := st.ckpt
					fmt.Fprintf(os.Stderr, "passes %d, rewind passes %d, rewinds %d, failures %d\n", c.passes.n.Load(), c.catchUps.n.Load(), c.rewinds.Load(), c.failures.Load())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return 0
}

// TestKilledMidCheckpoint: SIGKILL lands while the checkpointer copies the WAL back and has it
// rewound (a tiny WAL keeps it doing so all the time); after each kill every acknowledged
// write is in the file, and the file passes integrity_check. Five rounds.
func TestKilledMidCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the checkpointer reads the mmapped WAL-index (Linux)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "oauthd.db")
	var acked []string
	for round := range 5 {
		cmd := exec.Command(exe, "-test.run", "^$")
		cmd.Env = append(os.Environ(), ckptChildEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Kill it after a number of acknowledgements that varies by round: hundreds of
		// checkpoints have run by then.
		want := 600 + 300*round
		n := 0
		for line := range lines {
			acked = append(acked, line)
			if n++; n == want {
				cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		for line := range lines { // acknowledged before the kill arrived
			acked = append(acked, line)
		}
		cmd.Wait()
		if n < want {
			t.Fatalf("round %d: the writer stopped after %d writes: %s", round+1, n, stderr.String())
		}
		if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) > 0 {
			t.Logf("round %d, before the kill: %s", round+1, lines[len(lines)-1])
		}
		st, err := openStore(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		rows, err := st.db.Query("SELECT name FROM settings WHERE name LIKE 'k-%'")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name string
			rows.Scan(&name)
			have[name] = true
		}
		rows.Close()
		for _, name := range acked {
			if !have[name] {
				t.Fatalf("round %d: write %s was acknowledged before the kill and is gone", round+1, name)
			}
		}
		if got := integrityOf(t, st); got != "ok" {
			t.Fatalf("round %d: integrity_check = %q", round+1, got)
		}
		st.Close()
	}
	t.Logf("%d acknowledged writes across 5 kills mid-checkpoint; all held", len(acked))
}

// TestLongReaderBacksOff: while a reader holds an old snapshot the WAL cannot start over;
// the writer's passes are then asked for ever more rarely (not once per batch), and the
// rewind comes as soon as the reader is gone.
func TestLongReaderBacksOff(t *testing.T) {
	ts, c := ckptServer(t)
	st, ctx := ts.s.store, context.Background()
	conn, err := st.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n int
	if _, err := conn.ExecContext(ctx, "BEGIN DEFERRED"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM settings").Scan(&n); err != nil { // the snapshot starts here
		t.Fatal(err)
	}
	before := st.w.batches.Load()
	for i := range 300 { // one by one: one batch each
		if _, err := st.exec(ctx, "INSERT INTO settings(name, value) VALUES(?, ?)", fmt.Sprint("g-", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	batches, asked := st.w.batches.Load()-before, c.catchUps.n.Load()
	if c.rewinds.Load() != 0 {
		t.Fatalf("the WAL started over under a reader's snapshot")
	}
	// Asked at 16 frames, then after 4, 8 and every 16 more: about one pass per 16 frames of
	// growth (in production, per 8 MB), not one per batch.
	mx, _ := c.hdr.frames()
	if most := int64(mx)/16 + 4; asked == 0 || asked > most || asked*4 > batches {
		t.Fatalf("%d writer's passes for %d batches and %d frames under a long reader; want 1 to %d", asked, batches, mx, most)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	waitWriting(t, st, "a rewind once the reader is gone", func() bool { return c.rewinds.Load() > 0 })
}
