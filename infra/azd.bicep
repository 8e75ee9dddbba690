// What `azd up` deploys (azure.yaml: infra.module azd): main.bicep, with the parameters an operator sets read
// from the azd environment. azd fills azd.parameters.json from it (`azd env set PARTNER_CENTER_TENANT_ID ...`)
// and leaves out a parameter whose variable is not set, so the default below, the same as main.bicep's
// (tests/test_deploy.py checks), applies. Secrets never pass through here: azd would keep them in plain text in
// .azure/<env>/.env. They go into Key Vault afterwards (infra/README.md, "Secrets"), which the person running
// azd may do: azd gives AZURE_PRINCIPAL_ID, their object id, to secretsOperatorPrincipalId.
// `az deployment group create -f infra/main.bicep -p infra/main.parameters.json` deploys main.bicep directly.

param partnerCenterTenantId string = ''
param partnerCenterClientId string = ''
param salesforceLoginUrl string = 'https://login.salesforce.com'
param salesforceUsername string = ''
param salesforceClientId string = ''
param salesforceOrgId string = ''
param dryRun bool = false
param alertEmail string = ''
param refreshTokenSecretExists bool = false
param secretsOperatorPrincipalId string = ''

module connector 'main.bicep' = {
  name: 'connector'
  params: {
    partnerCenterTenantId: partnerCenterTenantId
    partnerCenterClientId: partnerCenterClientId
    salesforceLoginUrl: salesforceLoginUrl
    salesforceUsername: salesforceUsername
    salesforceClientId: salesforceClientId
    salesforceOrgId: salesforceOrgId
    dryRun: dryRun
    alertEmail: alertEmail
    refreshTokenSecretExists: refreshTokenSecretExists
    secretsOperatorPrincipalId: secretsOperatorPrincipalId
  }
}

// azd writes these into .azure/<env>/.env (AZURE_FUNCTION_NAME as Microsoft's Functions templates name it).
output AZURE_FUNCTION_NAME string = connector.outputs.functionAppName
output AZURE_FUNCTION_URL string = connector.outputs.functionAppUrl
output AZURE_KEY_VAULT_NAME string = connector.outputs.keyVaultName
output WEBHOOK_URL string = connector.outputs.webhookUrl
