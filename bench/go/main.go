// The Go subject of scripts/bench: the job as most teams would write it in Go,
// with the standard library only (net/http, encoding/json), built static
// (CGO_ENABLED=0, -trimpath, -ldflags "-s -w") for a FROM scratch image.
//
// Single row (INPUT_FILE unset): POST {"data":[[0,ECHO_TEXT]]} to SERVICE_URL
// and log the two lines of the tutorial's format on stdout:
//
//	service-to-service [2024-05-01 12:00:00,123] [INFO] Calling <url> with input Hello
//	service-to-service [2024-05-01 12:00:00,125] [INFO] Received response from <url>: Bob said Hello
//
// Batch (INPUT_FILE set): BATCH_SIZE rows (default 100) per POST over one
// keep-alive connection, every reply checked (each index of the batch answered
// exactly once), and OUTPUT_FILE written as JSON lines [index,reply] in index
// order through a temporary file renamed at the end: the same bytes as the
// Rust job and bench/peers/service_to_service.py write.
//
// Exit status: 0 on success, 1 on any failure (logged at ERROR).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func logf(level, format string, args ...any) {
	stamp := time.Now().UTC().Format("2006-01-02 15:04:05,000")
	fmt.Printf("service-to-service [%s] [%s] %s\n", stamp, level, fmt.Sprintf(format, args...))
}

type reply struct {
	Data []json.RawMessage `json:"data"`
}

// postRows POSTs rows ([index, text] pairs) and returns each index's reply,
// after checking that every row sent was answered exactly once.
func postRows(client *http.Client, url string, rows [][2]any) (map[int]any, error) {
	body, err := json.Marshal(map[string]any{"data": rows})
	if err != nil {
		return nil, err
	}
	response, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("POST %s failed: %w", url, err)
	}
	// Reading to the end lets the transport reuse the connection.
	text, err := io.ReadAll(response.Body)
	response.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the reply of %s: %w", url, err)
	}
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered HTTP %d: %.200q", url, response.StatusCode, text)
	}
	var decoded reply
	if err := json.Unmarshal(text, &decoded); err != nil || decoded.Data == nil {
		return nil, fmt.Errorf("%s sent a reply without a data array: %.200q", url, text)
	}
	sent := make(map[int]bool, len(rows))
	for _, row := range rows {
		sent[row[0].(int)] = true
	}
	answers := make(map[int]any, len(rows))
	for _, entry := range decoded.Data {
		var pair []any
		decoder := json.NewDecoder(bytes.NewReader(entry))
		// Numbers stay as written, so that they are copied out unchanged.
		decoder.UseNumber()
		if decoder.Decode(&pair) != nil || len(pair) != 2 {
			return nil, fmt.Errorf("%s answered a row that is not [index, value]: %s", url, entry)
		}
		number, _ := pair[0].(json.Number)
		index, err := strconv.Atoi(string(number))
		if err != nil || !sent[index] {
			return nil, fmt.Errorf("%s answered a row that was not sent: %s", url, entry)
		}
		if _, twice := answers[index]; twice {
			return nil, fmt.Errorf("%s answered row %d twice", url, index)
		}
		answers[index] = pair[1]
	}
	if len(answers) != len(sent) {
		return nil, fmt.Errorf("%s left %d rows unanswered", url, len(sent)-len(answers))
	}
	return answers, nil
}

func shown(value any) string {
	if text, ok := value.(string); ok {
		return text
	}
	encoded, _ := json.Marshal(value)
	return string(encoded)
}

func singleRow(url string) error {
	text, ok := os.LookupEnv("ECHO_TEXT")
	if !ok {
		text = "Hello"
	}
	logf("INFO", "Calling %s with input %s", url, text)
	answers, err := postRows(http.DefaultClient, url, [][2]any{{0, text}})
	if err != nil {
		return err
	}
	logf("INFO", "Received response from %s: %s", url, shown(answers[0]))
	return nil
}

func batchRows(url, inputFile string) (err error) {
	size := 100
	if text, ok := os.LookupEnv("BATCH_SIZE"); ok {
		if size, err = strconv.Atoi(text); err != nil || size < 1 {
			return fmt.Errorf("BATCH_SIZE must be a positive integer, got %q", text)
		}
	}
	input, err := os.Open(inputFile)
	if err != nil {
		return err
	}
	defer input.Close()

	// Without OUTPUT_FILE each reply is logged, as the single row is.
	var encoder *json.Encoder
	var out *bufio.Writer
	outputFile := os.Getenv("OUTPUT_FILE")
	if outputFile != "" {
		temporary, err := os.CreateTemp(filepath.Dir(outputFile), "."+filepath.Base(outputFile)+".*.tmp")
		if err != nil {
			return err
		}
		defer func() {
			temporary.Close()
			if err != nil {
				os.Remove(temporary.Name())
			}
		}()
		out = bufio.NewWriter(temporary)
		encoder = json.NewEncoder(out)
		// Go escapes <, > and & by default; the other jobs write them as is.
		encoder.SetEscapeHTML(false)
		defer func() {
			if err == nil {
				err = out.Flush()
			}
			if err == nil {
				err = temporary.Close()
			}
			if err == nil {
				err = os.Rename(temporary.Name(), outputFile)
			}
		}()
	}

	started := time.Now()
	done := 0
	send := func(rows [][2]any) error {
		answers, err := postRows(http.DefaultClient, url, rows)
		if err != nil {
			return err
		}
		for _, row := range rows {
			index := row[0].(int)
			if encoder == nil {
				logf("INFO", "Received response from %s: %s", url, shown(answers[index]))
			} else if err := encoder.Encode([2]any{index, answers[index]}); err != nil {
				return err
			}
		}
		done += len(rows)
		return nil
	}
	lines := bufio.NewScanner(input)
	lines.Buffer(make([]byte, 64*1024), 16*1024*1024)
	rows := make([][2]any, 0, size)
	for index := 0; lines.Scan(); index++ {
		rows = append(rows, [2]any{index, lines.Text()})
		if len(rows) == size {
			if err := send(rows); err != nil {
				return err
			}
			rows = rows[:0]
		}
	}
	if err := lines.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", inputFile, err)
	}
	if len(rows) > 0 {
		if err := send(rows); err != nil {
			return err
		}
	}
	elapsed := time.Since(started).Seconds()
	logf("INFO", "Done: %d rows in %.2fs (%.0f rows/s)", done, elapsed, float64(done)/(elapsed+1e-9))
	return nil
}

func main() {
	url, ok := os.LookupEnv("SERVICE_URL")
	if !ok {
		url = "http://localhost:8080/echo"
	}
	var err error
	if inputFile := os.Getenv("INPUT_FILE"); inputFile != "" {
		err = batchRows(url, inputFile)
	} else {
		err = singleRow(url)
	}
	if err != nil {
		logf("ERROR", "%s", err)
		os.Exit(1)
	}
}
