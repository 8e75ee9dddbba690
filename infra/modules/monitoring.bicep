// Application Insights on a Log Analytics workspace: the Functions host's requests and the connector's
// own logs (traces with customDimensions) land in the same workspace, so one KQL query sees both.

param location string
param tags object
param workspaceName string
param appInsightsName string
param retentionInDays int
@description('Email address the alerts go to (an action group is made for it). Empty: the alerts fire in the portal only.')
param alertEmail string = ''

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
  }
}

output appInsightsName string = appInsights.name
output connectionString string = appInsights.properties.ConnectionString
output workspaceId string = workspace.id

// ---------------------------------------------------------------------------------------------------
// Alerts: log search rules over the connector's telemetry (shared/telemetry.py) and the host's requests.
// Each rule's query lives in infra/alerts/*.kql, which tests/test_alerts.py runs over the records the real
// code writes, so a renamed event or dimension fails a test instead of silencing an alert. A rule fires
// when its query returns a row.
// ---------------------------------------------------------------------------------------------------

var alerts = [
  {
    name: 'dead-letters'
    title: 'Co-sell connector: work went to the dead letters'
    description: 'A referral, opportunity or relay gave up after its retries. The status page lists it with the reason; fix the cause, then replay it (python -m shared replay).'
    severity: 1
    frequency: 'PT5M'
    window: 'PT5M'
    query: loadTextContent('../alerts/dead-letters.kql')
  }
  {
    name: 'token'
    title: 'Co-sell connector: the Partner Center refresh token was refused or expires within 14 days'
    description: 'Every Partner Center call stops when the refresh token dies. Re-consent with MFA and set the new token (infra/README.md, Secrets).'
    severity: 1
    frequency: 'PT1H'
    window: 'PT1H'
    query: loadTextContent('../alerts/token.kql')
  }
  {
    name: 'stale-runs'
    title: 'Co-sell connector: no successful poll or reconcile for three schedules'
    description: 'The Salesforce poll or the Partner Center reconcile keeps failing, is paused by the API budget, or no longer runs. The status page says which and why.'
    severity: 2
    frequency: 'PT5M'
    window: 'P1D'
    query: loadTextContent('../alerts/stale-runs.kql')
  }
  {
    name: 'no-runs'
    title: 'Co-sell connector: the poll or the reconcile has not run for a day'
    description: 'No run of the Salesforce poll or the Partner Center reconcile was logged over a day: the app is stopped, its host cannot start (see the Function App\'s Diagnose and solve problems) or a timer is gone. Nothing syncs meanwhile.'
    severity: 1
    frequency: 'PT1H'
    window: 'P1D'
    query: loadTextContent('../alerts/no-runs.kql')
  }
  {
    name: 'receiver-5xx'
    title: 'Co-sell connector: a receiver answered 5xx'
    description: 'The Partner Center webhook, the Salesforce outbound message endpoint or the nudge route answered 5xx. Partner Center retries a refused delivery, then gives up after 10 tries; Salesforce retries for up to 24 hours; the reconcile and the poll catch up within their schedules. Usually queue storage is unreachable.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT5M'
    query: loadTextContent('../alerts/receiver-5xx.kql')
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${appInsightsName}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'cosell'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for alert in alerts: {
  name: '${appInsightsName}-${alert.name}'
  location: location
  tags: tags
  properties: {
    displayName: alert.title
    description: alert.description
    severity: alert.severity
    enabled: true
    evaluationFrequency: alert.frequency
    windowSize: alert.window
    scopes: [
      appInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}]
