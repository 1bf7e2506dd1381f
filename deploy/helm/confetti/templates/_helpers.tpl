{{/*
Names, labels, endpoints and checks shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "confetti.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: fullnameOverride, or the release name
with the chart name unless the release name already holds it. Kept to 40
characters so that "<fullname>-etcd-<shard>-N" fits a pod name.
*/}}
{{- define "confetti.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Chart name and version, as the helm.sh/chart label. */}}
{{- define "confetti.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "confetti.labels" -}}
helm.sh/chart: {{ include "confetti.chart" . }}
app.kubernetes.io/name: {{ include "confetti.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the pods of the release. */}}
{{- define "confetti.selectorLabels" -}}
app.kubernetes.io/name: {{ include "confetti.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of one component's resources: include with
(dict "context" $ "component" "proxy").
*/}}
{{- define "confetti.componentLabels" -}}
{{ include "confetti.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels that select one component's pods. */}}
{{- define "confetti.componentSelectorLabels" -}}
{{ include "confetti.selectorLabels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Metadata annotations of every resource (commonAnnotations). */}}
{{- define "confetti.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An image reference: include with an image section of the values. */}}
{{- define "confetti.imageRef" -}}
{{- if .registry -}}
{{- printf "%s/%s:%s" .registry .repository .tag -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{/* The label that lets a pod reach the proxies and caches when networkPolicy.allowExternal is false. */}}
{{- define "confetti.clientLabel" -}}
{{ include "confetti.fullname" . }}-client
{{- end -}}

{{/* Secret names. */}}
{{- define "confetti.operatorKeySecret" -}}
{{- default (printf "%s-operator-key" (include "confetti.fullname" .)) .Values.operatorKey.existingSecret -}}
{{- end -}}

{{- define "confetti.etcdAuthSecret" -}}
{{- default (printf "%s-etcd-auth" (include "confetti.fullname" .)) .Values.etcdAuth.existingSecret -}}
{{- end -}}

{{- define "confetti.etcdTokenSecret" -}}
{{- default (printf "%s-etcd-token" (include "confetti.fullname" .)) .Values.etcd.authToken.existingSecret -}}
{{- end -}}

{{/*
A value kept across upgrades: the existing Secret's value of key when the
Secret exists in the cluster, else a new one. Include with
(dict "context" $ "secret" NAME "key" KEY "new" VALUE).
*/}}
{{- define "confetti.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .context.Release.Namespace .secret -}}
{{- if and $existing (hasKey ($existing.data | default dict) .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- .new | b64enc -}}
{{- end -}}
{{- end -}}

{{/* etcd clusters of the chart: the name of one cluster's StatefulSet (id: meta or a shard id). */}}
{{- define "confetti.etcd.clusterName" -}}
{{- printf "%s-etcd-%s" (include "confetti.fullname" .context) .id | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* The client URLs of one etcd cluster of the chart, comma separated. */}}
{{- define "confetti.etcd.clientURLs" -}}
{{- $name := include "confetti.etcd.clusterName" . -}}
{{- $urls := list -}}
{{- range $i := until (int .context.Values.etcd.replicaCount) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless.%s.svc.%s:%d" $name $i $name $.context.Release.Namespace $.context.Values.clusterDomain (int $.context.Values.etcd.ports.client)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{/* Client URLs of meta, comma separated. */}}
{{- define "confetti.metaEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- include "confetti.etcd.clientURLs" (dict "context" . "id" "meta") -}}
{{- else -}}
{{- join "," .Values.externalEtcd.meta.endpoints -}}
{{- end -}}
{{- end -}}

{{/*
The shards as init's --shard arguments (ID=URL[,URL...]), one a line.
*/}}
{{- define "confetti.shardArgs" -}}
{{- if .Values.etcd.enabled -}}
{{- range .Values.etcd.shards }}
- --shard={{ . }}={{ include "confetti.etcd.clientURLs" (dict "context" $ "id" .) }}
{{- end }}
{{- else -}}
{{- range .Values.externalEtcd.shards }}
- --shard={{ .id }}={{ join "," .endpoints }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Pod security context of the pods. */}}
{{- define "confetti.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{/* Security context of the containers. */}}
{{- define "confetti.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/*
Preferred anti-affinity spreading one component's pods over nodes:
include with (dict "context" $ "component" "proxy").
*/}}
{{- define "confetti.softAntiAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "confetti.componentSelectorLabels" . | nindent 12 }}
{{- end -}}

{{/*
The volumes and mounts that give a role its etcd password and the CA of
external etcd endpoints.
*/}}
{{- define "confetti.etcdAuthVolume" -}}
- name: etcd-auth
  secret:
    secretName: {{ include "confetti.etcdAuthSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.etcdAuth.passwordKey }}
        path: password
{{- if and (not .Values.etcd.enabled) .Values.externalEtcd.caSecret }}
- name: etcd-ca
  secret:
    secretName: {{ .Values.externalEtcd.caSecret }}
    defaultMode: 0444
{{- end }}
{{- end -}}

{{- define "confetti.etcdAuthMounts" -}}
- name: etcd-auth
  mountPath: /etc/confetti/etcd
  readOnly: true
{{- if and (not .Values.etcd.enabled) .Values.externalEtcd.caSecret }}
- name: etcd-ca
  mountPath: /etc/confetti/etcd-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* The etcd client settings of a role's config file. */}}
{{- define "confetti.etcdClientConfig" -}}
meta-endpoints: {{ include "confetti.metaEndpoints" . | quote }}
etcd-username: {{ .Values.etcdAuth.username | quote }}
etcd-password-file: /etc/confetti/etcd/password
{{- if and (not .Values.etcd.enabled) .Values.externalEtcd.caSecret }}
etcd-cacert: /etc/confetti/etcd-ca/ca.crt
{{- end }}
{{- end -}}

{{/* A pod's own IP, for addresses it advertises. */}}
{{- define "confetti.podIPEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}

{{/*
Checks of the values: a combination that cannot work fails the render
with a message that says what to change.
*/}}
{{- define "confetti.validate" -}}
{{- $msgs := list -}}
{{- if .Values.etcd.enabled -}}
  {{- if not .Values.etcd.shards -}}
    {{- $msgs = append $msgs "etcd.shards is empty: Confetti needs at least one shard cluster (etcd.shards: [shard-a])" -}}
  {{- end -}}
  {{- range .Values.etcd.shards -}}
    {{- if not (regexMatch "^[a-z0-9][a-z0-9-]{0,30}$" (toString .)) -}}
      {{- $msgs = append $msgs (printf "etcd.shards: %q is not a shard id: use lowercase letters, digits and dashes, at most 31" (toString .)) -}}
    {{- end -}}
    {{- if eq (toString .) "meta" -}}
      {{- $msgs = append $msgs "etcd.shards: \"meta\" names the meta cluster of the chart; choose another shard id" -}}
    {{- end -}}
  {{- end -}}
  {{- if ne (len .Values.etcd.shards) (len (uniq .Values.etcd.shards)) -}}
    {{- $msgs = append $msgs "etcd.shards: a shard id is listed twice" -}}
  {{- end -}}
  {{- $n := int .Values.etcd.replicaCount -}}
  {{- if lt $n 1 -}}
    {{- $msgs = append $msgs "etcd.replicaCount must be at least 1 (3 or 5 for a cluster that survives a member's loss)" -}}
  {{- else if and .Values.etcd.pdb.create (ge (add (div $n 2) 1) $n) -}}
    {{- $msgs = append $msgs (printf "etcd.replicaCount is %d and etcd.pdb.create is true: the PodDisruptionBudget keeps a quorum of %d available, which would block every voluntary eviction; run 3 members or set etcd.pdb.create=false" $n (add (div $n 2) 1)) -}}
  {{- end -}}
  {{- if not (has .Values.etcd.authToken.signMethod (list "RS256" "RS384" "RS512" "ES256" "ES384" "ES512" "PS256" "PS384" "PS512" "EdDSA")) -}}
    {{- $msgs = append $msgs (printf "etcd.authToken.signMethod %q is not a JWT signing method etcd knows (RS256, ES256, ...)" .Values.etcd.authToken.signMethod) -}}
  {{- else if and (not (hasPrefix "RS" .Values.etcd.authToken.signMethod)) (not .Values.etcd.authToken.existingSecret) -}}
    {{- $msgs = append $msgs (printf "etcd.authToken.signMethod %s needs a key of that kind in etcd.authToken.existingSecret; the chart generates RSA keys only (RS256)" .Values.etcd.authToken.signMethod) -}}
  {{- end -}}
{{- else -}}
  {{- if not .Values.externalEtcd.meta.endpoints -}}
    {{- $msgs = append $msgs "etcd.enabled is false but externalEtcd.meta.endpoints is empty: name the client URLs of the meta cluster (externalEtcd.meta.endpoints: [https://meta-0:2379]) or set etcd.enabled=true" -}}
  {{- end -}}
  {{- if not .Values.externalEtcd.shards -}}
    {{- $msgs = append $msgs "etcd.enabled is false but externalEtcd.shards is empty: name at least one shard ({id: shard-a, endpoints: [https://shard-a-0:2379]})" -}}
  {{- end -}}
  {{- $ids := list -}}
  {{- range $i, $s := .Values.externalEtcd.shards -}}
    {{- if not $s.id -}}
      {{- $msgs = append $msgs (printf "externalEtcd.shards[%d] has no id" $i) -}}
    {{- else -}}
      {{- $ids = append $ids $s.id -}}
    {{- end -}}
    {{- if not $s.endpoints -}}
      {{- $msgs = append $msgs (printf "externalEtcd.shards[%d] (%s) has no endpoints: name its client URLs" $i (toString $s.id)) -}}
    {{- end -}}
  {{- end -}}
  {{- if ne (len $ids) (len (uniq $ids)) -}}
    {{- $msgs = append $msgs "externalEtcd.shards: a shard id is listed twice" -}}
  {{- end -}}
  {{- if not .Values.etcdAuth.existingSecret -}}
    {{- $msgs = append $msgs "etcd.enabled is false but etcdAuth.existingSecret is empty: external clusters need the root and confetti passwords they were (or will be) set up with, in a Secret you create (keys root-password and confetti-password)" -}}
  {{- end -}}
{{- end -}}
{{- range $role := list "proxy" "cache" "gateway" -}}
  {{- $v := index $.Values $role -}}
  {{- if or (ne $role "gateway") $.Values.gateway.enabled -}}
    {{- if lt (int $v.replicaCount) 1 -}}
      {{- $msgs = append $msgs (printf "%s.replicaCount must be at least 1" $role) -}}
    {{- end -}}
    {{- if and $v.pdb.create (ge (int $v.pdb.minAvailable) (int $v.replicaCount)) -}}
      {{- $msgs = append $msgs (printf "%s.pdb.minAvailable (%d) must be below %s.replicaCount (%d), or no pod could ever be evicted: raise the replicas, lower minAvailable or set %s.pdb.create=false" $role (int $v.pdb.minAvailable) $role (int $v.replicaCount) $role) -}}
    {{- end -}}
    {{- if and $v.pdb.create (lt (int $v.pdb.minAvailable) 0) -}}
      {{- $msgs = append $msgs (printf "%s.pdb.minAvailable must not be negative" $role) -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- if .Values.gateway.enabled -}}
  {{- if not .Values.gateway.tenant -}}
    {{- $msgs = append $msgs "gateway.enabled is true but gateway.tenant is empty: name the tenant whose routes the gateway serves" -}}
  {{- end -}}
  {{- if not .Values.gateway.apiKey.existingSecret -}}
    {{- $msgs = append $msgs "gateway.enabled is true but gateway.apiKey.existingSecret is empty: create a reader key of the tenant (KEY=$(confetti tenant key create TENANT --role reader --name gateways)) and put it in a Secret (kubectl create secret generic gw-key --from-literal=api-key=$KEY)" -}}
  {{- end -}}
{{- end -}}
{{- if $msgs -}}
{{- fail (printf "\n\nconfetti chart: values that cannot work:\n  - %s\n" (join "\n  - " $msgs)) -}}
{{- end -}}
{{- end -}}

{{/* The ingress rule that opens a metrics port to the scrapers (networkPolicy.metricsFrom; empty: any). */}}
{{- define "confetti.metricsIngress" -}}
- ports:
    - port: {{ .port }}
      protocol: TCP
  {{- with .context.Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* A NetworkPolicyPeer selecting one component's pods of this release. */}}
{{- define "confetti.peer" -}}
- podSelector:
    matchLabels:
      {{- include "confetti.componentSelectorLabels" . | nindent 6 }}
{{- end -}}
