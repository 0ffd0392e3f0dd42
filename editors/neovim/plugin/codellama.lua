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
  local adapter = codellama.adapter()
  vim.notify((status ~= '' and status or 'codellama: not running in this buffer') .. (statistics and ('\n' .. statistics) or '')
    .. (adapter and ('\n' .. adapter) or ''))
end, { desc = 'Show the codellama model, device, last latency and this session\'s acceptance statistics' })

vim.api.nvim_create_user_command('CodellamaTrain', function(opts)
  local steps = opts.args ~= '' and tonumber(opts.args) or nil
  if opts.args ~= '' and not (steps and steps >= 1 and steps == math.floor(steps)) then
    vim.notify('codellama: :CodellamaTrain takes a number of training steps, or nothing', vim.log.levels.WARN)
    return
  end
  require('codellama').train({ steps = steps })
end, { nargs = '?', desc = 'Train an adapter on the project (optional: training steps); resumes a cancelled run' })

vim.api.nvim_create_user_command('CodellamaTrainCancel', function()
  require('codellama').cancel_training()
end, { desc = 'Stop the adapter training (it resumes on the next :CodellamaTrain)' })

vim.api.nvim_create_user_command('CodellamaDropAdapter', function()
  require('codellama').drop_adapter()
end, { desc = 'Stop using the adapter trained on this project' })
