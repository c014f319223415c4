package promtext

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// sourceFunc is a Source from a function.
type sourceFunc func(w *Writer)

func (f sourceFunc) WriteMetrics(w *Writer) { f(w) }

func TestWriterPage(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer)
		want  string
	}{
		{"a counter and a gauge", func(w *Writer) {
			w.Family("x_total", "Xs seen.", Counter, "real", "outcome")
			w.Sample(3, "10.0.0.1:80", "ok")
			w.Sample(1e21, "10.0.0.1:80", "fail")
			w.Family("y", "Y now.", Gauge)
			w.Sample(-1)
		}, "# HELP x_total Xs seen.\n# TYPE x_total counter\n" +
			"x_total{outcome=\"ok\",real=\"10.0.0.1:80\"} 3\n" +
			"x_total{outcome=\"fail\",real=\"10.0.0.1:80\"} 1e+21\n" +
			"# HELP y Y now.\n# TYPE y gauge\ny -1\n"},
		{"escapes", func(w *Writer) {
			w.Family("e", "A \\ and a\nnewline, \"quoted\".", Gauge, "v")
			w.Sample(0.5, "a\"b\\c\nd")
		}, "# HELP e A \\\\ and a\\nnewline, \"quoted\".\n# TYPE e gauge\n" +
			"e{v=\"a\\\"b\\\\c\\nd\"} 0.5\n"},
		{"special values", func(w *Writer) {
			w.Family("s", "S.", Gauge, "k")
			w.Sample(math.Inf(1), "a")
			w.Sample(math.Inf(-1), "b")
			w.Sample(math.NaN(), "c")
		}, "# HELP s S.\n# TYPE s gauge\ns{k=\"a\"} +Inf\ns{k=\"b\"} -Inf\ns{k=\"c\"} NaN\n"},
		{"a family without samples is left off", func(w *Writer) {
			w.Family("empty", "Nothing.", Counter, "k")
			w.Family("one", "One.", Counter)
			w.Sample(1)
		}, "# HELP one One.\n# TYPE one counter\none 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			w := NewWriter(&b)
			tt.write(w)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("page:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}

func TestWriterErrors(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer)
		want  string
	}{
		{"a family twice", func(w *Writer) {
			w.Family("x", "X.", Gauge)
			w.Sample(1)
			w.Family("x", "X.", Gauge)
			w.Sample(2)
		}, "metric family x written twice"},
		{"label values short", func(w *Writer) {
			w.Family("x", "X.", Gauge, "a", "b")
			w.Sample(1, "only")
		}, "metric family x: 1 label values for 2 labels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter(io.Discard)
			tt.write(w)
			if err := w.Flush(); err == nil || err.Error() != tt.want {
				t.Errorf("Flush: %v, want %q", err, tt.want)
			}
		})
	}
}

// registry holds a counter, registered as the daemon's families are.
func registry(t *testing.T) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "reg_total", Help: "From the registry."})
	c.Add(2)
	reg.MustRegister(c)
	return reg
}

var perReal = sourceFunc(func(w *Writer) {
	w.Family("per_real", "One per real.", Gauge, "real")
	w.Sample(1, "10.0.0.2:80")
	w.Sample(0, "10.0.0.1:80")
})

// The page is the registry's families and the sources', as Prometheus's
// parser reads them.
func TestGathererReadsThePage(t *testing.T) {
	want := `# HELP per_real One per real.
# TYPE per_real gauge
per_real{real="10.0.0.1:80"} 0
per_real{real="10.0.0.2:80"} 1
# HELP reg_total From the registry.
# TYPE reg_total counter
reg_total 2
`
	if err := testutil.GatherAndCompare(Gatherer(registry(t), perReal), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// A source that repeats a registry family makes a page Prometheus
	// would reject: the page says so.
	dup := sourceFunc(func(w *Writer) {
		w.Family("reg_total", "Again.", Counter)
		w.Sample(1)
	})
	if _, err := Gatherer(registry(t), dup).Gather(); err == nil || !strings.Contains(err.Error(), "reg_total written twice") {
		t.Errorf("a family twice: %v", err)
	}
}

func TestHandler(t *testing.T) {
	h := Handler(registry(t), 4, perReal)
	get := func(encoding string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/metrics", nil)
		if encoding != "" {
			r.Header.Set("Accept-Encoding", encoding)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	plain := get("")
	if plain.Code != http.StatusOK || plain.Header().Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" ||
		plain.Header().Get("Content-Encoding") != "" {
		t.Fatalf("plain: %d %v", plain.Code, plain.Header())
	}
	for _, line := range []string{"reg_total 2\n", `per_real{real="10.0.0.2:80"} 1` + "\n"} {
		if !strings.Contains(plain.Body.String(), line) {
			t.Errorf("plain page lacks %q:\n%s", line, plain.Body.String())
		}
	}
	zipped := get("br, gzip;q=0.8")
	if zipped.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip accepted, Content-Encoding %q", zipped.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(zipped.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || string(unzipped) != plain.Body.String() {
		t.Errorf("gzipped page (%v):\n%s\nwant:\n%s", err, unzipped, plain.Body.String())
	}
	if refused := get("gzip;q=0"); refused.Header().Get("Content-Encoding") != "" {
		t.Error("gzip;q=0: page gzipped")
	}
}

// A registry that fails gives 500, as promhttp does, with the error.
func TestHandlerGatherError(t *testing.T) {
	h := Handler(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		return nil, errors.New("collector broke")
	}), 4, perReal)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "collector broke") {
		t.Errorf("%d %q", w.Code, w.Body.String())
	}
}

// Scrapes beyond maxInFlight get 503 at once instead of queueing behind
// pages being written.
func TestHandlerBoundsScrapes(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := sourceFunc(func(w *Writer) {
		entered <- struct{}{}
		<-release
	})
	h := Handler(registry(t), 1, slow)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
	}()
	<-entered
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	close(release)
	wg.Wait()
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("second scrape: %d, want 503", w.Code)
	}
	go func() { <-entered }()
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Errorf("scrape after the first ended: %d", w.Code)
	}
}
