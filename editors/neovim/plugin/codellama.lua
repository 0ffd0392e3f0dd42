-- Commands only; nothing starts until require("codellama").setup() is called.
if vim.g.loaded_codellama then
  return
end
vim.g.loaded_codellama = true

vim.api.nvim_create_user_command('CodellamaToggle', function()
  require('codellama').enable()
end, { desc = 'Turn codellama suggestions on or off' })

vim.api.nvim_create_user_command('CodellamaRestart', function()
  require('codellama').restart()
end, { desc = 'Restart the codellama language server' })

vim.api.nvim_create_user_command('CodellamaStatus', function()
  local codellama = require('codellama')
  local status = codellama.status()
  local statistics = codellama.statistics()
  vim.notify((status ~= '' and status or 'codellama: not running in this buffer') .. (statistics and ('\n' .. statistics) or ''))
end, { desc = 'Show the codellama model, device, last latency and this session\'s acceptance statistics' })
