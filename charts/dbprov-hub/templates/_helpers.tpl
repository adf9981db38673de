{{/* Names and labels shared by every template. */}}
{{- define "dbprov-hub.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dbprov-hub.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dbprov-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbprov-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dbprov-hub.labels" -}}
{{ include "dbprov-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dbprov
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "dbprov-hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dbprov-hub.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dbprov-hub.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding tls.crt, tls.key and ca.crt. */}}
{{- define "dbprov-hub.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "dbprov-hub.fullname" .) -}}
{{- else -}}
{{- required "set tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt, e.g. from `dbprov-hub certs`) or enable tls.certManager" .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}
