package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Latency benchmarks: throughput and the latency distribution (p50, p99, max) of the token
// endpoints, with the load generated in another process (loadgen_test.go), and the WAL's size
// under a minute of sustained client_credentials load.
//
//	go test -run '^$' -bench 'Tail' -count 3     # three interleaved rounds
//	go test -run '^$' -bench 'WALSustained'      # 60 s; OAUTHD_WAL_SECONDS changes it
//
// Each BenchmarkTail round measures, at 16, 32 and 64 concurrent clients, the baseline (a
// trivial handler answering a POST with 100 bytes of JSON through the same middleware) and
// then each endpoint; x_baseline is the endpoint's req/s over the baseline's at the same
// concurrency in the same round. The server-side figures (commit_max_ms, sync_max_ms,
// ckpt_max_ms, …) say which operation a tail comes from.

// tailConcurrency are the client counts BenchmarkTail measures.
var tailConcurrency = []int{16, 32, 64}

// tailBaseline is the baseline's req/s per concurrency, from the latest round.
var tailBaseline struct {
	sync.Mutex
	rps map[int]float64
}

func BenchmarkTail(b *testing.B) {
	for _, conc := range tailConcurrency {
		for _, kind := range []string{"baseline", "client_credentials", "refresh", "introspect", "code_flow"} {
			b.Run(fmt.Sprintf("c%d/%s", conc, kind), func(b *testing.B) {
				ts := benchServer(b)
				spec := tailSpec(b, ts, kind, conc)
				spec.N = b.N
				res := runTailLoad(b, ts, spec)
				rps := float64(res.N) / res.Seconds
				tailBaseline.Lock()
				if tailBaseline.rps == nil {
					tailBaseline.rps = map[int]float64{}
				}
				if kind == "baseline" {
					tailBaseline.rps[conc] = rps
				}
				base := tailBaseline.rps[conc]
				tailBaseline.Unlock()
				if base > 0 && kind != "baseline" {
					b.ReportMetric(rps/base, "x_baseline")
				}
			})
		}
	}
}

// BenchmarkTailMixed issues client_credentials tokens and introspects a token at once, 16
// clients each (one generator process each), as an API gateway checking tokens beside
// services fetching them: does the writer's disk work hold up the reads? One 3-second run.
func BenchmarkTailMixed(b *testing.B) {
	ts := benchServer(b)
	cc := tailSpec(b, ts, "client_credentials", 16)
	in := tailSpec(b, ts, "introspect", 16)
	// Both run for the same time (3 s, whatever b.N is), so that each meets the other throughout.
	cc.Seconds, in.Seconds = 3, 3
	var procs [2]*loadProc
	for i, spec := range []loadSpec{cc, in} {
		p, err := startLoad(spec)
		if err != nil {
			b.Fatal(err)
		}
		procs[i] = p
	}
	resetServerStats(ts.s.store)
	startTimer(b)
	var res [2]loadResult
	var errs [2]error
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = p.run()
		}()
	}
	wg.Wait()
	b.StopTimer()
	for i, name := range []string{"cc", "introspect"} {
		if errs[i] != nil {
			b.Fatal(errs[i])
		}
		if res[i].Errors > 0 {
			b.Fatalf("%s: %d requests failed; the first: %s", name, res[i].Errors, res[i].FirstError)
		}
		b.ReportMetric(float64(res[i].N)/res[i].Seconds, name+"_req/s")
		b.ReportMetric(float64(res[i].P50)/1000, name+"_p50_ms")
		b.ReportMetric(float64(res[i].P99)/1000, name+"_p99_ms")
		b.ReportMetric(float64(res[i].Max)/1000, name+"_max_ms")
	}
	reportServerStats(b, ts, res[0].N+res[1].N)
}

// tailSpec sets up ts for one kind of load and says how to generate it.
func tailSpec(b *testing.B, ts *testServer, kind string, conc int) loadSpec {
	b.Helper()
	spec := loadSpec{Mode: "post", Conns: conc}
	switch kind {
	case "baseline":
		c := ts.addServiceClient("read")
		spec.URL, spec.Auth = ts.url+"/bench/baseline", newPoster("", c).auth
		spec.Form = url.Values{"grant_type": {grantClientCredentials}}.Encode()
	case "client_credentials":
		c := ts.addServiceClient("read")
		spec.URL, spec.Auth = ts.url+"/oauth/token", newPoster("", c).auth
		spec.Form = url.Values{"grant_type": {grantClientCredentials}}.Encode()
	case "introspect":
		c := ts.addClient(false, "read", "https://app.example/cb")
		tok := str(benchTokens(b, ts, c).JSON["access_token"])
		spec.URL, spec.Auth = ts.url+"/oauth/introspect", newPoster("", c).auth
		spec.Form = url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode()
	case "refresh":
		c := ts.addClient(false, "read", "https://app.example/cb")
		br := ts.browser(ts.addBenchUser(), "bench password")
		for range conc {
			code, ver := br.getCode(c)
			spec.Chains = append(spec.Chains, str(ts.exchange(c, code, ver).JSON["refresh_token"]))
		}
		spec.Mode, spec.URL, spec.Auth = "refresh", ts.url+"/oauth/token", newPoster("", c).auth
	case "code_flow":
		c := ts.addClient(false, "read", "https://app.example/cb")
		br := ts.browser(ts.addBenchUser(), "bench password")
		br.getCode(c) // login and remembered consent
		u, _ := url.Parse(ts.url)
		var cookie *http.Cookie
		for _, ck := range br.c.Jar.Cookies(u) {
			if ck.Name == "oauthd_session" {
				cookie = ck
			}
		}
		if cookie == nil {
			b.Fatal("no session cookie")
		}
		spec.Mode, spec.URL, spec.Auth = "code", ts.url+"/oauth/token", newPoster("", c).auth
		spec.Code = &codeLoadSpec{AuthorizeURL: ts.url + "/oauth/authorize", Cookie: cookie.Name + "=" + cookie.Value, Client: c}
	default:
		b.Fatalf("unknown load %q", kind)
	}
	return spec
}

// runTailLoad runs spec against ts from another process, timing only the load itself, and
// reports req/s, the latency distribution, the server's CPU and what its writer and
// checkpoints took meanwhile.
func runTailLoad(b *testing.B, ts *testServer, spec loadSpec) loadResult {
	b.Helper()
	p, err := startLoad(spec)
	if err != nil {
		b.Fatal(err)
	}
	st := ts.s.store
	resetServerStats(st)
	startTimer(b)
	res, err := p.run()
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Errors > 0 {
		b.Fatalf("%d of %d requests failed; the first: %s", res.Errors, res.Errors+res.N, res.FirstError)
	}
	b.ReportMetric(float64(res.N)/res.Seconds, "req/s")
	b.ReportMetric(float64(res.P50)/1000, "p50_ms")
	b.ReportMetric(float64(res.P99)/1000, "p99_ms")
	b.ReportMetric(float64(res.Max)/1000, "max_ms")
	reportServerStats(b, ts, res.N)
	if os.Getenv("OAUTHD_TAIL_VERBOSE") != "" {
		b.Logf("N=%d p90=%.1fms p99.9=%.1fms slowest (start ms, took ms): %s", res.N, float64(res.P90)/1000,
			float64(res.P999)/1000, slowList(res.Slowest))
		b.Logf("commits: %s", durString(&st.w.commitTime))
		b.Logf("flushes: %s", durString(&st.w.syncTime))
		logCheckpoints(b, st)
		logStalls(b, st, res)
	}
	return res
}

// slowList formats the slowest requests.
func slowList(s []slowRequest) string {
	out := ""
	for _, r := range s {
		out += fmt.Sprintf(" %.0f:%.1f", float64(r.At)/1000, float64(r.Took)/1000)
	}
	return out
}

// gcPauses samples the Go runtime's stop-the-world pauses of garbage collection: how long
// stopping took (every running goroutine must reach a safe point; one inside a raw system
// call cannot) and how long the world stood in all.
var gcPauses = []metrics.Sample{{Name: "/sched/pauses/stopping/gc:seconds"}, {Name: "/sched/pauses/total/gc:seconds"}}

// gcAtStart holds the pause histograms' counts when the timed load started.
var gcAtStart [2][]uint64

// readGC reads the pause histograms' counts.
func readGC() (counts [2][]uint64) {
	metrics.Read(gcPauses)
	for i, s := range gcPauses {
		if s.Value.Kind() == metrics.KindFloat64Histogram {
			counts[i] = append([]uint64(nil), s.Value.Float64Histogram().Counts...)
		}
	}
	return counts
}

// gcSince is, for one pause histogram, how many pauses there were since the start, the
// longest (the upper bound of its bucket) and how many took 1 ms or more.
func gcSince(i int, now [2][]uint64) (n uint64, longest float64, over1ms uint64) {
	h := gcPauses[i].Value.Float64Histogram()
	for j := range now[i] {
		d := now[i][j]
		if j < len(gcAtStart[i]) {
			d -= gcAtStart[i][j]
		}
		if d == 0 {
			continue
		}
		n += d
		longest = h.Buckets[j+1]
		if h.Buckets[j] >= 1e-3 {
			over1ms += d
		}
	}
	return n, longest, over1ms
}

// resetServerStats zeroes the writer's counters, so that they cover the timed load alone.
func resetServerStats(st *store) {
	gcAtStart = readGC()
	if st.w == nil {
		return
	}
	st.w.batches.Store(0)
	st.w.jobsRun.Store(0)
	for _, d := range []*durStats{&st.w.commitTime, &st.w.syncTime} {
		resetDur(d)
	}
	if c := st.ckpt; c != nil {
		resetDur(&c.passes)
		resetDur(&c.catchUps)
		c.failures.Store(0)
		c.rewinds.Store(0)
		c.maxFrames.Store(0)
	}
}

func resetDur(d *durStats) {
	d.slowMu.Lock()
	d.slow = nil
	d.slowMu.Unlock()
	d.n.Store(0)
	d.total.Store(0)
	d.max.Store(0)
	for i := range d.over {
		d.over[i].Store(0)
	}
}

// reportServerStats reports the server process's CPU and disk writes per request (n of them),
// and its writer's batch size, longest commit and flush, and the WAL's size.
func reportServerStats(b *testing.B, ts *testServer, n int) {
	cpu := cpuSince(cpuAtStart)
	b.ReportMetric(cpu.Seconds()/b.Elapsed().Seconds(), "srv_cpu_cores")
	st := ts.s.store
	if w := st.w; w != nil {
		if n := w.batches.Load(); n > 0 {
			b.ReportMetric(float64(w.jobsRun.Load())/float64(n), "jobs/commit")
			b.ReportMetric(float64(w.commitTime.max.Load())/1e6, "commit_max_ms")
			b.ReportMetric(float64(w.syncTime.max.Load())/1e6, "sync_max_ms")
			if n := w.syncTime.n.Load(); n > 0 {
				b.ReportMetric(float64(w.syncTime.total.Load())/float64(n)/1e6, "sync_mean_ms")
			}
			b.ReportMetric(float64(w.commitTime.over[3].Load()), "commits≥16ms")
		}
	}
	now := readGC()
	_, stopping, _ := gcSince(0, now)
	pauses, longest, long := gcSince(1, now)
	b.ReportMetric(float64(pauses), "gc_pauses")
	b.ReportMetric(stopping*1000, "gc_stopping_max_ms")
	b.ReportMetric(longest*1000, "gc_pause_max_ms")
	b.ReportMetric(float64(long), "gc_pauses≥1ms")
	if c := st.ckpt; c != nil && c.passes.n.Load()+c.catchUps.n.Load() > 0 {
		b.ReportMetric(float64(max(c.passes.max.Load(), c.catchUps.max.Load()))/1e6, "ckpt_max_ms")
		b.ReportMetric(float64(c.catchUps.max.Load())/1e6, "rewind_max_ms")
		b.ReportMetric(float64(c.rewinds.Load()), "rewinds")
	}
	if fi, err := os.Stat(st.path + "-wal"); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "wal_MB")
	}
	if n > 0 {
		io := procIO()
		b.ReportMetric((io[1]-ioAtStart[1])/float64(n)/1024, "disk_KB/op")
	}
}

// durString is a one-line summary of d.
func durString(d *durStats) string {
	n := d.n.Load()
	if n == 0 {
		return "none"
	}
	s := fmt.Sprintf("%d, mean %.2f ms, max %.1f ms, ≥2/4/8/16/32/64/128 ms:", n,
		float64(d.total.Load())/float64(n)/1e6, float64(d.max.Load())/1e6)
	for i := range d.over {
		s += " " + strconv.FormatInt(d.over[i].Load(), 10)
	}
	return s
}

// BenchmarkWALSustained runs client_credentials at 32 concurrent clients (load in another
// process) for a minute and reports the WAL's size: its largest, sampled every 100 ms, and
// at the end. The WAL must stay under 64 MB. One run whatever b.N is.
func BenchmarkWALSustained(b *testing.B) {
	secs := 60.0
	if v, err := strconv.ParseFloat(os.Getenv("OAUTHD_WAL_SECONDS"), 64); err == nil && v > 0 {
		secs = v
	}
	ts := benchServer(b)
	spec := tailSpec(b, ts, "client_credentials", 32)
	spec.Seconds = secs
	var maxWAL int64
	var series []string
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			fi, err := os.Stat(ts.s.store.path + "-wal")
			if err != nil {
				continue
			}
			maxWAL = max(maxWAL, fi.Size())
			if i%50 == 0 {
				series = append(series, fmt.Sprintf("%ds:%.1f", i/10, float64(fi.Size())/(1<<20)))
			}
		}
	}()
	res := runTailLoad(b, ts, spec)
	close(stop)
	<-sampled
	b.ReportMetric(float64(maxWAL)/(1<<20), "wal_max_MB")
	w := ts.s.store.w
	b.Logf("%.0f s, %d tokens; WAL size (MB) every 5 s: %v", res.Seconds, res.N, series)
	b.Logf("commits: %s", durString(&w.commitTime))
	b.Logf("flushes: %s", durString(&w.syncTime))
	logCheckpoints(b, ts.s.store)
	if maxWAL > 64<<20 {
		b.Errorf("the WAL reached %.1f MB; want ≤ 64 MB", float64(maxWAL)/(1<<20))
	}
}

// cpuSince is the CPU time this process used since it had used t0.
func cpuSince(t0 time.Duration) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) - t0
}

// logCheckpoints logs what the checkpointer did.
func logCheckpoints(b *testing.B, st *store) {
	if c := st.ckpt; c != nil {
		b.Logf("background passes: %s", durString(&c.passes))
		b.Logf("writer's passes before a rewind: %s", durString(&c.catchUps))
		b.Logf("rewinds %d, failed passes %d, longest WAL %d frames", c.rewinds.Load(), c.failures.Load(), c.maxFrames.Load())
	}
}

// logStalls lines up the clients' stalls (requests of 40 ms or more, grouped when less than
// 50 ms apart) with the server's slow operations (16 ms or more) that overlapped them.
func logStalls(b *testing.B, st *store, res loadResult) {
	start := time.Unix(0, res.Start)
	type op struct {
		what string
		slowOp
	}
	var ops []op
	collect := func(what string, d *durStats) {
		d.slowMu.Lock()
		for _, o := range d.slow {
			ops = append(ops, op{what, o})
		}
		d.slowMu.Unlock()
	}
	collect("commit", &st.w.commitTime)
	collect("flush", &st.w.syncTime)
	if c := st.ckpt; c != nil {
		collect("ckpt", &c.passes)
		collect("rewind", &c.catchUps)
	}
	stalls := slices.Clone(res.Stalls)
	slices.SortFunc(stalls, func(a, b slowRequest) int { return int(a.At - b.At) })
	ms := func(t time.Time) float64 { return float64(t.Sub(start).Microseconds()) / 1000 }
	for i := 0; i < len(stalls); {
		j, end := i, stalls[i].At+stalls[i].Took
		worst := int64(0)
		for ; j < len(stalls) && stalls[j].At < end+50_000; j++ {
			end = max(end, stalls[j].At+stalls[j].Took)
			worst = max(worst, stalls[j].Took)
		}
		from := start.Add(time.Duration(stalls[i].At) * time.Microsecond)
		to := start.Add(time.Duration(end) * time.Microsecond)
		line := fmt.Sprintf("stall at %.0f-%.0f ms: %d requests, worst %.0f ms; server:", ms(from), ms(to), j-i, float64(worst)/1000)
		for _, o := range ops {
			if o.start.Before(to) && o.start.Add(o.took).After(from) {
				line += fmt.Sprintf(" %s %.0f+%.0f", o.what, ms(o.start), float64(o.took.Microseconds())/1000)
			}
		}
		b.Log(line)
		i = j
	}
}
