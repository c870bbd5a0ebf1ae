// The metrics tests read /metrics with the same Prometheus text reader as loadtest/.
export { parseScrape, scrape, value, type Sample } from '../../loadtest/prometheus-text.js';
