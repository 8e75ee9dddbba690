// The Function App's full app settings, applied after the identity holds its roles so the Key Vault
// references and the identity-based storage connections resolve on the first start. This replaces the
// whole set: a setting added by hand in the portal disappears on the next deployment (add it here).

param appName string

@description('Setting name to value. May hold a storage key (Premium/Consumption content share), hence secure.')
@secure()
param settings object

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: appName
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: settings
}
