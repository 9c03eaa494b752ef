// The Flex Consumption (FC1, Linux) plan and the Python 3.11 function app. Every connection is
// identity-based (the user-assigned identity): storage via `<NAME>__blobServiceUri` etc., Key Vault
// via KEY_VAULT_URL + AZURE_CLIENT_ID, Application Insights via APPLICATIONINSIGHTS_AUTHENTICATION_STRING.
// Not set on purpose: FUNCTIONS_WORKER_RUNTIME and SCM_DO_BUILD_DURING_DEPLOYMENT (invalid on Flex:
// the runtime is functionAppConfig.runtime; remote build is asked for by the deployment itself),
// and no AzureWebJobsStorage connection string (shared keys are off on the account).

@description('Function app name (globally unique host name).')
param name string

@description('App Service plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Blob endpoint of the app storage account (https://<account>.blob.core.windows.net/).')
param storageBlobEndpoint string

@description('Queue endpoint of the app storage account.')
param storageQueueEndpoint string

@description('Container of the app storage account holding the deployment package.')
param deploymentContainerName string

@description('Blob endpoint of the segment storage account.')
param segmentsBlobEndpoint string

@description('Key Vault URI (https://<vault>.vault.azure.net/).')
param keyVaultUri string

@description('Application Insights connection string (no secret: local auth is disabled).')
param appInsightsConnectionString string

@description('NCRONTAB schedule (with seconds) of the export timer.')
param exportSchedule string

@description('Seconds a plain CSV segment folder must stay quiet before its snapshot counts as complete.')
@minValue(1)
@maxValue(86400)
param csvQuietSeconds int

@description('How the HTTP API authenticates callers: function keys, or Entra ID (App Service Authentication).')
@allowed([
  'key'
  'entra'
])
param authMode string

@description('Entra ID application (client) id of the API, for authMode entra.')
param entraClientId string = ''

@description('Entra ID tenant of the API application, for authMode entra.')
param entraTenantId string = ''

@description('ActiveCampaign API requests per second, per account.')
param requestsPerSecond string

@description('ActiveCampaign bulk imports per minute, per account.')
param bulkImportsPerMinute string

@description('Share of the request rate the app takes (ACTIVECAMPAIGN_REQUEST_SHARE).')
param requestShare string

@description('Extra ActiveCampaign host suffixes, comma-separated (empty: the built-in list only).')
param allowedHostSuffixes string

@description('Seconds a run may work before it checkpoints and continues in a new invocation; below functionTimeout (host.json, 30 min).')
@minValue(60)
@maxValue(1680)
param runTimeBudgetSeconds int

@description('Seconds a secret read from Key Vault is cached.')
@minValue(0)
@maxValue(86400)
param secretCacheSeconds int

@description('Run records kept per export, with their reports and rejected rows.')
@minValue(1)
@maxValue(100000)
param runsKeptPerExport int

@description('Days the rejected rows of a run (personal data) are kept; the timer deletes older ones.')
@minValue(1)
@maxValue(3650)
param rejectedRowsRetentionDays int

@description('Upper bound of instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance (MB).')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  // checkov:skip=CKV_AZURE_225: Zone redundancy on Flex Consumption exists only in some regions and needs zone-redundant storage; exports are idempotent, resumable batch runs, so a zone outage only delays the next run.
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  // checkov:skip=CKV_AZURE_17: Client certificates are not how callers authenticate: function keys (authMode key) or Entra ID tokens through App Service Authentication (authMode entra).
  // checkov:skip=CKV_AZURE_13: App Service Authentication is deployed (authsettingsV2 below) when authMode is entra; with authMode key the HTTP API requires function keys.
  // checkov:skip=CKV_AZURE_222: Public network access stays on: the HTTP API is called from outside and the app is not VNet-integrated; callers authenticate with keys or Entra ID.
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    // checkov:skip=CKV_AZURE_212: Flex Consumption scales per function from zero; there is no instance count to pin for failover.
    // checkov:skip=CKV_AZURE_213: Flex Consumption has no App Service health check (sites.siteConfig.healthCheckPath is not supported on FC1).
    // checkov:skip=CKV_AZURE_78: siteConfig.ftpsState is not set on purpose: Flex Consumption rejects it in newer regions (ARM error 51021); FTP is off through the basicPublishingCredentialsPolicies "ftp" (allow false) below.
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [
        // App storage (AzureWebJobsStorage), identity-based: read by the host and by shared/settings.py.
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storageBlobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storageQueueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // Segment storage (read only).
        {
          name: 'SEGMENTS_STORAGE__blobServiceUri'
          value: segmentsBlobEndpoint
        }
        {
          name: 'SEGMENTS_STORAGE__credential'
          value: 'managedidentity'
        }
        {
          name: 'SEGMENTS_STORAGE__clientId'
          value: identityClientId
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'EXPORT_SCHEDULE'
          value: exportSchedule
        }
        {
          name: 'CSV_QUIET_SECONDS'
          value: string(csvQuietSeconds)
        }
        {
          name: 'AUTH_MODE'
          value: authMode
        }
        {
          name: 'ACTIVECAMPAIGN_REQUESTS_PER_SECOND'
          value: requestsPerSecond
        }
        {
          name: 'ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE'
          value: bulkImportsPerMinute
        }
        {
          name: 'ACTIVECAMPAIGN_REQUEST_SHARE'
          value: requestShare
        }
        {
          name: 'ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES'
          value: allowedHostSuffixes
        }
        {
          name: 'RUN_TIME_BUDGET_SECONDS'
          value: string(runTimeBudgetSeconds)
        }
        {
          name: 'SECRET_CACHE_SECONDS'
          value: string(secretCacheSeconds)
        }
        {
          name: 'RUNS_KEPT_PER_EXPORT'
          value: string(runsKeptPerExport)
        }
        {
          name: 'REJECTED_ROWS_RETENTION_DAYS'
          value: string(rejectedRowsRetentionDays)
        }
        {
          // How long a run's hold on its export and account lasts between renewals (15-60 s).
          name: 'RUN_LEASE_SECONDS'
          value: '60'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No publishing with user names and passwords: code is deployed with Entra ID
// (az functionapp deployment source config-zip authenticates with the signed-in account).
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// App Service Authentication with Entra ID, only for authMode entra: every HTTP request needs a
// bearer token issued for the API application or a browser session (/.auth/login/aad); the app then
// reads the caller from the X-MS-CLIENT-PRINCIPAL header, and its API routes ask for no function key
// (functions/http.py). Timer and queue triggers are not HTTP and are unaffected.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (authMode == 'entra') {
  parent: site
  name: 'authsettingsV2'
  // checkov runs its checks of the site's `web` configuration (logging, .NET version, Azure Files,
  // public access) on every sites/config child; this one is the authentication document only.
  // checkov:skip=CKV_AZURE_13: This IS App Service Authentication (v2: platform.enabled); the check reads the v1 `enabled` property.
  properties: {
    // checkov:skip=CKV_AZURE_63: HTTP logging is a property of the web config, not of authsettingsV2; requests are logged to Application Insights.
    // checkov:skip=CKV_AZURE_65: Detailed error pages are a property of the web config, not of authsettingsV2; errors go to Application Insights.
    // checkov:skip=CKV_AZURE_66: Failed request tracing is a property of the web config, not of authsettingsV2; failures go to Application Insights.
    platform: {
      // checkov:skip=CKV_AZURE_80: No .NET: a Python app; and not a property of authsettingsV2.
      // checkov:skip=CKV_AZURE_88: Flex Consumption uses no Azure Files share; and not a property of authsettingsV2.
      enabled: true
    }
    globalValidation: {
      // checkov:skip=CKV_AZURE_222: Public network access is a property of the site (see there), not of authsettingsV2.
      // checkov:skip=CKV_AZURE_70: HTTPS-only is set on the site (httpsOnly) and below (requireHttps); the check does not understand authsettingsV2.
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      // The console's page and assets hold no data: unsigned, a browser gets the page and its sign-in
      // link. Kept equal to functions/console.py public_paths() by tests/test_infra.py.
      excludedPaths: [
        '/api/console'
        '/api/console/api.js'
        '/api/console/app.js'
        '/api/console/changes.js'
        '/api/console/chart.js'
        '/api/console/connections.js'
        '/api/console/csv.js'
        '/api/console/dom.js'
        '/api/console/exports.js'
        '/api/console/hostname.js'
        '/api/console/icon.svg'
        '/api/console/names.js'
        '/api/console/runs.js'
        '/api/console/style.css'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${entraTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${entraClientId}'
            entraClientId
          ]
        }
      }
    }
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
