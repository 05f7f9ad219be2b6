{{/* Release name, or release-chart, at most 63 characters. */}}
{{- define "paperbot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* Labels of every object of the release. */}}
{{- define "paperbot.crdLabels" -}}
app.kubernetes.io/part-of: paperbot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of the operator's objects. */}}
{{- define "paperbot.labels" -}}
{{ include "paperbot.crdLabels" . }}
app.kubernetes.io/name: paperbot-operator
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "paperbot.selectorLabels" -}}
app.kubernetes.io/name: paperbot-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of the runtime pods (operator/src/builders.rs `labels`). */}}
{{- define "paperbot.runtimeSelectorLabels" -}}
app.kubernetes.io/name: bot-runtime
app.kubernetes.io/managed-by: paperbot-operator
{{- end -}}

{{- define "paperbot.feedSelectorLabels" -}}
app.kubernetes.io/name: paperbot-feed
app.kubernetes.io/managed-by: paperbot-operator
{{- end -}}

{{- define "paperbot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "paperbot.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* The runtime image: runtime.image, or ghcr.io/paperbot/bot-runtime:<appVersion>. */}}
{{- define "paperbot.runtimeImage" -}}
{{- .Values.runtime.image | default (printf "ghcr.io/paperbot/bot-runtime:%s" .Chart.AppVersion) -}}
{{- end -}}

{{/* Namespaces whose runtimes get a NetworkPolicy (list, JSON-encoded). */}}
{{- define "paperbot.sessionNamespaces" -}}
{{- .Values.networkPolicy.sessionNamespaces | default .Values.watchNamespaces | uniq | toJson -}}
{{- end -}}

{{/*
Combinations of values the schema cannot refuse: fail the render with what
is wrong and what to do. Included by the Deployment, so every install,
upgrade, template and lint checks them.
*/}}
{{- define "paperbot.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection) -}}
{{- fail (printf "replicaCount is %d but leaderElection is false: more than one replica needs leader election (set leaderElection=true), or two operators would write the same objects" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below replicaCount (%d), or no node could ever be drained" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- end -}}
{{- if .Values.networkPolicy.enabled -}}
{{- if not .Values.networkPolicy.apiServer.cidrs -}}
{{- fail "networkPolicy.enabled needs networkPolicy.apiServer.cidrs: the CIDRs of the API server endpoints the operator connects to (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes)" -}}
{{- end -}}
{{- if not (include "paperbot.sessionNamespaces" . | fromJsonArray) -}}
{{- fail "networkPolicy.enabled with an operator that watches all namespaces needs networkPolicy.sessionNamespaces: the namespaces of the BotSessions, where the runtimes' NetworkPolicies go" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy egress rule to DNS (UDP and TCP on each port). */}}
{{- define "paperbot.dnsEgress" -}}
# DNS.
- to:
    {{- toYaml .Values.networkPolicy.dns.to | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.dns.ports }}
    - {port: {{ . }}, protocol: UDP}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end -}}
