{{/*
Monitoring helpers (ServiceMonitor, PodMonitor, PrometheusRule, dashboards).
*/}}

{{/* prometheus.io/* annotations of the operator pod (monitoring.scrapeAnnotations.enabled). */}}
{{- define "paperbot.scrapeAnnotations" -}}
{{- if .Values.monitoring.scrapeAnnotations.enabled -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* The runbook links of files/alerts.yaml point here unless overridden. */}}
{{- define "paperbot.defaultRunbookBase" -}}
https://github.com/paperbot/paperbot/blob/main/docs/runbooks.md
{{- end -}}
