//! The live page: plain HTML and a few lines of script that refresh from `/api/live`.

/// The live page: plain HTML and a few lines of script that refresh from `/api/live`.
pub(super) const LIVE_PAGE: &str = r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gauntlet coordinator</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;color:#1a1a1a;max-width:1100px}h1{font-size:20px}
h2{font-size:16px;margin-top:24px;border-bottom:1px solid #ddd}.pass{color:#1b7f3b}.fail{color:#b00020}.error{color:#8a4b00}
.chart{display:block;margin:10px 0;border:1px solid #eee}.chart .title{font-size:14px;font-weight:bold}.chart .tick{font-size:10px;fill:#555}
.chart .label{font-size:11px;fill:#333}.chart .legend{font-size:11px}.chart .axis{stroke:#333}.chart .grid{stroke:#eee}.chart .empty{fill:#999}</style>
</head><body><h1>gauntlet coordinator</h1><p id="summary">loading…</p><div id="runs"></div>
<script>
function esc(s){return String(s).replace(/[&<>"]/g,function(c){return{"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c];});}
async function refresh(){
  try{
    const data=await (await fetch('/api/live')).json();
    document.getElementById('summary').textContent=data.workers+' workers connected ('+data.workers_known+' known), '+data.runs.length+' recent runs';
    document.getElementById('runs').innerHTML=data.runs.map(function(r){
      return '<h2>'+esc(r.plan)+' <code>'+esc(r.run_id)+'</code>: '+esc(r.state)+(r.verdict?' <span class="'+esc(r.verdict)+'">'+esc(r.verdict)+'</span>':'')+'</h2>'
        +'<p>'+r.elapsed_s.toFixed(1)+' s, '+r.sessions+' sessions, '+r.passed+' passed, '+r.failed+' failed. '+esc(r.verdict_reason)+'</p>'
        +(r.findings.length?'<p>Findings'+(r.verdict?'':' so far')+':</p><ul>'+r.findings.map(function(f){return '<li>'+esc(f)+'</li>';}).join('')+'</ul>':'')
        +r.charts.join('');
    }).join('');
  }catch(e){document.getElementById('summary').textContent='coordinator unreachable: '+e;}
}
refresh();setInterval(refresh,2000);
</script></body></html>
"#;
